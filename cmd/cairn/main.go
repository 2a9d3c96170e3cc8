// Command cairn is the Cairn server: an etcd v3 compatible, strongly
// consistent key-value store. This package only parses configuration and
// wires the server; every behaviour lives under internal/.
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}
