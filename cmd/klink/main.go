// Command klink is the cluster-linking daemon and its tools.
//
//	klink run --config /etc/klink/klink.yaml   the daemon
//	klink demo [--duration 30s]                two in-process clusters, live mirroring
//	klink version
package main

import (
	"fmt"
	"os"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

const usage = `klink: offset-preserving cluster linking for Apache Kafka

Usage:
  klink run --config FILE     run the daemon (default config: /etc/klink/klink.yaml)
  klink demo [flags]          mirror between two in-process Kafka clusters and watch it
  klink version               print the version
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = runCmd(os.Args[2:])
	case "demo":
		err = demoCmd(os.Args[2:])
	case "version", "--version":
		fmt.Println("klink", version)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "klink: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "klink:", err)
		os.Exit(1)
	}
}
