// Command popconn is the POP3 connector for Exchange on one machine. See
// package cli for the commands and the README for the configuration.
package main

import (
	"os"

	"github.com/popconnector/popconnector/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr)) }
