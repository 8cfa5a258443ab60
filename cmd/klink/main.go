// Command klink is the cluster-linking daemon and its tools.
//
//	klink run --config /etc/klink/klink.yaml   the daemon
//	klink demo [--duration 30s]                two in-process clusters, live mirroring
//	klink status [--config FILE] [-o json]     the running daemon's links and mirrors
//	klink plan --config FILE [-o json]         what a reload with FILE would do
//	klink doctor --config FILE                 can klink reach and use every cluster?
//	klink version
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

const usage = `klink: offset-preserving cluster linking for Apache Kafka

Usage:
  klink run --config FILE     run the daemon (default config: /etc/klink/klink.yaml)
  klink demo [flags]          mirror between two in-process Kafka clusters and watch it
  klink status [flags]        the running daemon's links and mirror topics (--config, --admin, -o json)
  klink plan --config FILE    what a reload (SIGHUP) with FILE would do now (--admin, -o json)
  klink doctor --config FILE  check every cluster: DNS, TCP, TLS, SASL, advertised brokers, permissions
  klink netlink serve --config FILE   run the file's network link services
  klink netlink status [flags]        network link endpoints, services and associations
  klink version               print the version
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	if cmd := os.Args[1]; cmd == "run" || cmd == "demo" || cmd == "netlink" && len(os.Args) > 2 && os.Args[2] == "serve" {
		keepSysmonAwake() // the commands that move data
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = runCmd(os.Args[2:])
	case "demo":
		err = demoCmd(os.Args[2:])
	case "status":
		err = statusCmd(os.Args[2:])
	case "plan":
		err = planCmd(os.Args[2:])
	case "doctor":
		err = doctorCmd(os.Args[2:])
	case "netlink":
		err = netlinkCmd(os.Args[2:])
	case "version", "--version":
		fmt.Println("klink", version)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "klink: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if errors.Is(err, flag.ErrHelp) {
		return // --help: the flag set printed the command's usage
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "klink:", err)
		os.Exit(1)
	}
}
