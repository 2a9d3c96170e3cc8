// Command cairnctl is Cairn's offline tool, what etcdutl is to etcd: it
// works on files and data dirs, never on a running server (use etcdctl for
// that; Cairn speaks etcd's API).
//
//	cairnctl snapshot restore <file> --data-dir D --name N --initial-cluster C \
//	    --initial-cluster-token T --initial-advertise-peer-urls U
//	cairnctl snapshot status <file> [-w table|json]
//
// A snapshot file is what `etcdctl snapshot save` stores from a Cairn
// member. Restore makes the data dir of one member of a new cluster: run it
// once per member, with the same file and --initial-cluster, then start
// each member with its data dir (no --initial-cluster-state is needed: the
// data dir knows its cluster).
package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"go.uber.org/zap"

	"github.com/cairnkv/cairn/internal/backup"
	"github.com/cairnkv/cairn/internal/config"
	"github.com/cairnkv/cairn/internal/member"
)

const usage = `Usage:
  cairnctl snapshot restore <file> [flags]   make a member's data dir of a new cluster from a snapshot
  cairnctl snapshot status <file> [-w table|json]   check a snapshot file and print what it holds

A snapshot file is what 'etcdctl snapshot save' stores from a Cairn member.
Run 'cairnctl snapshot restore --help' for the restore flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) < 2 || args[0] != "snapshot" {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[1] {
	case "restore":
		err = restore(args[2:], stdout, stderr)
	case "status":
		err = status(args[2:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "cairnctl: unknown command %q\n\n%s", "snapshot "+args[1], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "Error: %v\n", err)
		return 1
	}
	return 0
}

// fileArg splits the snapshot file (the first non-flag argument) from the
// flags, which may come before or after it, as with etcdutl.
func fileArg(fs *flag.FlagSet, args []string) (string, error) {
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return "", fmt.Errorf("snapshot file path required")
	}
	file := rest[0]
	if err := fs.Parse(rest[1:]); err != nil {
		return "", err
	}
	if fs.NArg() > 0 {
		return "", fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return file, nil
}

func restore(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cairnctl snapshot restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := config.Defaults()
	name := fs.String("name", def.Name, "Human-readable name for this member.")
	dataDir := fs.String("data-dir", "", "Path to the data directory to create (default \"<name>.cairn\"); it must not exist or be empty.")
	initialCluster := fs.String("initial-cluster", def.InitialCluster, "Initial cluster configuration for restore bootstrap (name=peerURL,...).")
	token := fs.String("initial-cluster-token", "etcd-cluster", "Initial cluster token for the cluster during restore bootstrap.")
	peerURLs := fs.String("initial-advertise-peer-urls", strings.Join(def.InitialAdvertisePeerURLs, ","), "List of this member's peer URLs to advertise to the rest of the cluster.")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: cairnctl snapshot restore <file> [flags]\n\nMakes the data dir of member --name of a new cluster whose state is the snapshot.\nRestore every member from the same file with the same --initial-cluster.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	file, err := fileArg(fs, args)
	if err != nil {
		return err
	}
	cfg := def
	cfg.Name, cfg.DataDir, cfg.InitialCluster, cfg.InitialClusterToken = *name, *dataDir, *initialCluster, *token
	cfg.InitialAdvertisePeerURLs = strings.Split(*peerURLs, ",")
	if cfg.DataDir == "" {
		cfg.DataDir = cfg.Name + ".cairn"
	}
	lg, err := zap.NewProduction()
	if err != nil {
		return err
	}
	defer func() { _ = lg.Sync() }()
	info, err := member.Restore(lg, cfg, file)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "restored snapshot %s (revision %d, %d versions) into %s as member %s\n", file, info.Revision, info.Keys, cfg.DataDir, cfg.Name)
	return nil
}

func status(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cairnctl snapshot status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	format := fs.String("w", "table", "Output format: table or json.")
	file, err := fileArg(fs, args)
	if err != nil {
		return err
	}
	info, err := backup.Read(file, func(_, _ []byte) error { return nil })
	if err != nil {
		return err
	}
	sum := hex.EncodeToString(info.SHA256[:])
	switch *format {
	case "json":
		return json.NewEncoder(stdout).Encode(map[string]any{
			"revision": info.Revision, "totalKey": info.Keys, "totalSize": info.Size, "sha256": sum,
		})
	case "table":
		fmt.Fprintf(stdout, "%-10s %-12s %-12s %s\n", "REVISION", "TOTAL KEYS", "TOTAL SIZE", "SHA256")
		fmt.Fprintf(stdout, "%-10d %-12d %-12d %s\n", info.Revision, info.Keys, info.Size, sum)
		return nil
	default:
		return fmt.Errorf("unknown output format %q (table or json)", *format)
	}
}
