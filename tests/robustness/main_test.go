package robustness

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// binaries are built (or taken from the environment) once by TestMain.
var binaries struct {
	server string // cairn, or ROBUSTNESS_SERVER_BINARY
	cairn  bool   // the server is cairn (else etcd): cairn-only faults apply
}

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "cairn-robustness-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "robustness:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binaries.server = os.Getenv("ROBUSTNESS_SERVER_BINARY")
	if binaries.server == "" {
		binaries.server = filepath.Join(dir, "cairn")
		args := []string{"build", "-o", binaries.server}
		if os.Getenv("ROBUSTNESS_SERVER_RACE") != "0" {
			args = append(args, "-race")
		}
		if err := goBuild(append(args, "./cmd/cairn")...); err != nil {
			fmt.Fprintln(os.Stderr, "robustness:", err)
			return 1
		}
	}
	out, _ := exec.Command(binaries.server, "--version").Output()
	binaries.cairn = strings.Contains(string(out), "cairn Version")
	return m.Run()
}

// noteInputs makes `go test` caching see what the tests depend on (TestMain
// runs before the test log is on, see tests/e2e).
func noteInputs() {
	for _, v := range []string{"ROBUSTNESS_SERVER_BINARY", "ROBUSTNESS_LONG", "ROBUSTNESS_DURATION",
		"ROBUSTNESS_SEED", "ROBUSTNESS_KEEP", "ROBUSTNESS_SERVER_RACE", "ROBUSTNESS_FAULTS", "ROBUSTNESS_TRAFFIC"} {
		os.Getenv(v)
	}
	_, _ = os.Stat(binaries.server)
}

func goBuild(args ...string) error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	cmd := exec.Command(gobin, args...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// repoRoot walks up from the working directory to cairn's go.mod.
func repoRoot() (string, error) {
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

// skipShort is for tests too slow for -short.
func skipShort(t *testing.T) {
	if testing.Short() {
		t.Skip("robustness runs are skipped with -short")
	}
}
