// Command kubectl-keyward is the kubectl plugin for Keyward access keys:
// `kubectl keyward status|rotate|revoke|deactivate|activate|extend|create|reveal|whois|expiring|version`.
//
// Install it on PATH (go install keyward.dev/keyward/cmd/kubectl-keyward@latest,
// or make plugin) and kubectl finds it. Linked or copied as
// kubectl_complete-keyward, it answers kubectl's shell completion for the plugin.
package main

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"keyward.dev/keyward/internal/cli"
)

func main() {
	// The plugin has nothing to log; keep controller-runtime from warning
	// that no logger was set.
	ctrllog.SetLogger(logr.Discard())

	args := os.Args[1:]
	// kubectl completes a plugin's arguments by running
	// kubectl_complete-<plugin> with them.
	if strings.HasPrefix(filepath.Base(os.Args[0]), "kubectl_complete-") {
		args = append([]string{cobra.ShellCompRequestCmd}, args...)
	}
	o := cli.NewOptions(genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
	os.Exit(cli.Run(o, args))
}
