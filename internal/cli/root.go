// Package cli is the kubectl plugin `kubectl keyward`: the everyday commands
// for Keyward's AccessKeys (status, rotate, revoke, deactivate, activate,
// extend, reveal, whois, expiring). cmd/kubectl-keyward is its main package;
// the commands live here so that they can be tested without a cluster.
//
// Key material: only `reveal` prints a key, to standard output. `whois`
// reads a key from standard input and never prints it; errors never quote it.
package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// Options is what every command shares: the kubectl connection flags, the
// streams, and the seams that tests replace (clock, client, terminal).
type Options struct {
	genericiooptions.IOStreams
	// ConfigFlags are kubectl's own flags: --kubeconfig, --context, -n,
	// --as, --as-group, --server, --token, ...
	ConfigFlags *genericclioptions.ConfigFlags

	// Now is the clock (relative times, rotation request values).
	Now func() time.Time
	// NewClient returns the API client; the default builds one from ConfigFlags.
	NewClient func() (client.Client, error)
	// Namespace returns the namespace from -n or the kubeconfig context, and
	// whether -n was given.
	Namespace func() (string, bool, error)
	// StdinIsTerminal reports whether standard input is a terminal (revoke
	// asks for confirmation only there; whois then reads without echo).
	StdinIsTerminal func() bool
	// ReadSecretLine reads one line from the terminal without echoing it.
	ReadSecretLine func() (string, error)
	// Random supplies the random suffix of rotation requests.
	Random io.Reader
	// PollInterval is how often --wait looks at the key.
	PollInterval time.Duration
}

// NewOptions returns Options wired to the real process: os streams, the
// wall clock, the kubeconfig.
func NewOptions(streams genericiooptions.IOStreams) *Options {
	o := &Options{
		IOStreams:    streams,
		ConfigFlags:  genericclioptions.NewConfigFlags(true),
		Now:          time.Now,
		PollInterval: 250 * time.Millisecond,
	}
	o.NewClient = o.defaultClient
	o.Namespace = func() (string, bool, error) { return o.ConfigFlags.ToRawKubeConfigLoader().Namespace() }
	o.StdinIsTerminal = func() bool {
		f, ok := o.In.(*os.File)
		return ok && term.IsTerminal(int(f.Fd()))
	}
	o.ReadSecretLine = func() (string, error) {
		f, ok := o.In.(*os.File)
		if !ok {
			return "", fmt.Errorf("standard input is not a terminal")
		}
		b, err := term.ReadPassword(int(f.Fd()))
		_, _ = fmt.Fprintln(o.ErrOut)
		return string(b), err
	}
	return o
}

// Scheme holds the kinds the plugin reads and writes.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := keyward.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := corev1.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := appsv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

func (o *Options) defaultClient() (client.Client, error) {
	cfg, err := o.ConfigFlags.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	return client.New(cfg, client.Options{Scheme: Scheme()})
}

// NewRootCommand builds `kubectl keyward` and its subcommands.
func NewRootCommand(o *Options) *cobra.Command {
	root := &cobra.Command{
		Use:   "kubectl-keyward",
		Short: "Everyday commands for Keyward access keys",
		Long: `kubectl keyward: status, rotation, revocation and leak response for Keyward AccessKeys.

It takes kubectl's own flags (--kubeconfig, --context, -n, --as, --as-group, ...)
and acts with the rights of the user they select.`,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl keyward"},
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(o.In)
	root.SetOut(o.Out)
	root.SetErr(o.ErrOut)
	o.ConfigFlags.AddFlags(root.PersistentFlags())

	root.AddCommand(
		newStatusCommand(o),
		newRotateCommand(o),
		newRevokeCommand(o),
		newStateCommand(o, keyward.StateInactive),
		newStateCommand(o, keyward.StateActive),
		newExtendCommand(o),
		newCreateCommand(o),
		newRevealCommand(o),
		newWhoisCommand(o),
		newExpiringCommand(o),
		newVersionCommand(o),
	)
	return root
}

// Run executes the plugin with args (without the program name) and returns
// the exit code: 0 on success, 1 on any failure, after printing the failure
// as one line on standard error.
func Run(o *Options, args []string) int {
	root := NewRootCommand(o)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		if notInstalled(err) {
			err = errNotInstalled
		}
		_, _ = fmt.Fprintln(o.ErrOut, "error: "+oneLine(err.Error()))
		return 1
	}
	return 0
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// session is what a command needs once its flags are parsed.
type session struct {
	*Options
	ctx        context.Context
	c          client.Client
	ns         string
	nsExplicit bool
	// served holds the AccessKeys read as the API serves them, by
	// namespace/name, for -o (see listKeys).
	served map[string]*unstructured.Unstructured
}

func (o *Options) session(cmd *cobra.Command) (*session, error) {
	ns, explicit, err := o.Namespace()
	if err != nil {
		return nil, err
	}
	c, err := o.NewClient()
	if err != nil {
		return nil, err
	}
	return &session{Options: o, ctx: cmd.Context(), c: c, ns: ns, nsExplicit: explicit}, nil
}

// keyArg is the Args check of commands that take exactly one KEY.
func keyArg(cmd *cobra.Command, args []string) error {
	switch len(args) {
	case 1:
		return nil
	case 0:
		return fmt.Errorf("%s needs the name of an AccessKey: %s", cmd.Name(), cmd.UseLine())
	default:
		return fmt.Errorf("%s takes one AccessKey, got %d arguments: %s", cmd.Name(), len(args), cmd.UseLine())
	}
}

// completeKeys completes the one AccessKey name of a command, in the
// namespace of the flags.
func (o *Options) completeKeys(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return o.completeMoreKeys(cmd, args, toComplete)
}

// completeMoreKeys completes AccessKey names not given yet, for commands
// that take several.
func (o *Options) completeMoreKeys(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	s, err := o.session(cmd)
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var keys keyward.AccessKeyList
	if err := s.c.List(s.ctx, &keys, client.InNamespace(s.ns)); err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var names []string
	for _, k := range keys.Items {
		if strings.HasPrefix(k.Name, toComplete) && !slices.Contains(args, k.Name) {
			names = append(names, k.Name)
		}
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}
