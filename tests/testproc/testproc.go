// Package testproc is what the end-to-end and robustness tests share to run
// Cairn (or etcd) as real processes: building binaries from this module,
// noticing when a server is ready from its log, and finding the Go
// runtime's crash reports in its log afterwards.
//
// It is test support only: nothing in cmd/ or internal/ may import it.
package testproc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// ReadyLine is logged by etcd (embed/serve.go) and by Cairn once the client
// port serves requests.
const ReadyLine = "ready to serve client requests"

// crashReports are what the Go runtime prints, at the start of a line, for
// a data race found by a -race binary, a panic and a fatal error.
var crashReports = []string{"WARNING: DATA RACE", "\npanic: ", "\nfatal error: "}

// CrashReports returns, for each crash report in a server's log, an error
// naming it and quoting up to quote bytes from where it starts.
func CrashReports(logPath string, quote int) []error {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return nil
	}
	b = append([]byte("\n"), b...) // crash reports start a line
	var errs []error
	for _, bad := range crashReports {
		if i := bytes.Index(b, []byte(bad)); i >= 0 {
			errs = append(errs, fmt.Errorf("%s reports %q:\n%s", filepath.Base(logPath), strings.TrimSpace(bad), b[i:min(len(b), i+quote)]))
		}
	}
	return errs
}

// LogWriter copies a server's output to a file and closes Ready at the first
// line that contains ReadyLine.
type LogWriter struct {
	mu      sync.Mutex
	f       *os.File
	partial []byte // an unterminated last line
	ready   chan struct{}
	seen    bool
}

// NewLogWriter writes to f and closes ready when the server is ready.
func NewLogWriter(f *os.File, ready chan struct{}) *LogWriter {
	return &LogWriter{f: f, ready: ready}
}

func (w *LogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := w.f.Write(p); err != nil {
		return 0, err
	}
	if w.seen {
		return len(p), nil
	}
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		if bytes.Contains(w.partial[:i], []byte(ReadyLine)) {
			w.seen = true
			close(w.ready)
			w.partial = nil
			return len(p), nil
		}
		w.partial = w.partial[i+1:]
	}
	w.partial = bytes.Clone(w.partial)
	return len(p), nil
}

// GoBuild runs `go build args...` at the root of this module.
func GoBuild(args ...string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		if _, statErr := os.Stat(gobin); statErr != nil {
			return fmt.Errorf("go tool not found in PATH (%v) nor in $GOROOT/bin", err)
		}
	}
	cmd := exec.Command(gobin, append([]string{"build"}, args...)...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// RepoRoot walks up from the working directory to this module's go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/cairnkv/cairn\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of github.com/cairnkv/cairn above the working directory")
		}
		dir = parent
	}
}
