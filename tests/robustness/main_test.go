package robustness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairnkv/cairn/tests/testproc"
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
		args := []string{"-o", binaries.server}
		if os.Getenv("ROBUSTNESS_SERVER_RACE") != "0" {
			args = append(args, "-race")
		}
		if err := testproc.GoBuild(append(args, "./cmd/cairn")...); err != nil {
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

// skipShort is for tests too slow for -short.
func skipShort(t *testing.T) {
	if testing.Short() {
		t.Skip("robustness runs are skipped with -short")
	}
}
