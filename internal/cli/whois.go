package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/secrets"
)

// WhoisResult names the AccessKey a key belongs to (-o json|yaml). It never
// holds the secret.
type WhoisResult struct {
	KeyID       string `json:"keyID"`
	Namespace   string `json:"namespace"`
	Name        string `json:"name"`
	Application string `json:"application"`
	Owner       string `json:"owner,omitempty"`
	Phase       string `json:"phase"`
	// Which is "current" or "previous" (rotated out, within its grace period).
	Which string `json:"which"`
	// ValidUntil is the end of the previous key's grace period.
	ValidUntil string `json:"validUntil,omitempty"`
	// SecretChecked is false only for a revoked key, whose hash is cleared:
	// then only the key ID matched.
	SecretChecked bool `json:"secretChecked"`

	validUntil time.Time
}

func newWhoisCommand(o *Options) *cobra.Command {
	var output string
	var all bool
	cmd := &cobra.Command{
		Use:   "whois",
		Short: "Tell which AccessKey a key (read from standard input) is: for leak response",
		Long: `Reads one key from standard input (never from an argument, so it does not land in
shell history; on a terminal it is read without echo), checks its format and
checksum, finds the AccessKey whose current or previous key ID it carries
(field selector status.keyID; previous keys by listing), checks its secret
against the stored hash, and prints which key it is. It never prints the secret.

It searches every namespace you may list AccessKeys in (-A, the default), or only
the namespace of -n. A key of the right format that matches no key you can see
is "unknown" (exit code 1).`,
		Example: `  kubectl keyward whois < leaked.txt
  pbpaste | kubectl keyward whois -o json
  kubectl keyward whois -n shop    # then paste the key`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("whois reads the key from standard input, never from an argument (arguments land in shell history): kubectl keyward whois < key.txt")
			}
			return checkResultOutput(output)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := o.session(cmd)
			if err != nil {
				return err
			}
			return s.whois(all || !s.nsExplicit, output)
		},
	}
	resultOutputFlag(cmd, &output)
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "search every namespace you may list (the default unless -n is given)")
	return cmd
}

// maxKeyInput bounds what whois reads from standard input.
const maxKeyInput = 4096

func (s *session) readKey() (string, error) {
	if s.StdinIsTerminal() {
		_, _ = fmt.Fprint(s.ErrOut, "Paste the key (it is not echoed), then press Enter: ")
		return s.ReadSecretLine()
	}
	b, err := io.ReadAll(io.LimitReader(bufio.NewReader(s.In), maxKeyInput+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxKeyInput {
		return "", errors.New("not a Keyward key: standard input is far longer than a key")
	}
	return string(b), nil
}

func (s *session) whois(all bool, output string) error {
	raw, err := s.readKey()
	if err != nil {
		return fmt.Errorf("reading the key from standard input: %w", err)
	}
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return errors.New("no key on standard input: kubectl keyward whois < key.txt")
	}
	key, err := keyformat.Parse(raw)
	if err != nil {
		// keyformat's errors never quote the key.
		if errors.Is(err, keyformat.ErrMalformed) {
			return errors.New("not a Keyward key: expected kw_<id>_<secret>_<checksum>")
		}
		return fmt.Errorf("not a Keyward key: %v", err)
	}
	res, scope, err := s.findKey(key, all)
	if err != nil {
		return err
	}
	if res == nil {
		return fmt.Errorf("unknown: no AccessKey you can see has this key ID and secret (searched %s); it may be forged, or belong to a key deleted since", scope)
	}
	if output != "" {
		return printStructured(s.Out, output, res)
	}
	return printWhois(s.Out, *res, s.Now())
}

// findKey looks for the key in the namespaces the user can see. scope
// describes where it looked.
func (s *session) findKey(key keyformat.Key, all bool) (*WhoisResult, string, error) {
	if !all {
		res, err := s.findIn(key, s.ns)
		return res, "namespace " + s.ns, explain(err)
	}
	res, err := s.findIn(key, "")
	if err == nil {
		return res, "all namespaces", nil
	}
	if !apierrors.IsForbidden(err) {
		return nil, "", err
	}
	// Not allowed to list AccessKeys cluster-wide: try each namespace.
	var nsList corev1.NamespaceList
	if err := s.c.List(s.ctx, &nsList); err != nil {
		if !apierrors.IsForbidden(err) {
			return nil, "", explain(err)
		}
		res, err := s.findIn(key, s.ns)
		if apierrors.IsForbidden(err) {
			return nil, "", fmt.Errorf("you may list AccessKeys neither in all namespaces nor in namespace %s, and may not list namespaces: name a namespace you may read with -n", s.ns)
		}
		if err != nil {
			return nil, "", explain(err)
		}
		return res, "namespace " + s.ns + " only, as you may list neither AccessKeys in all namespaces nor namespaces; name another with -n", nil
	}
	var searched []string
	for _, n := range nsList.Items {
		res, err := s.findIn(key, n.Name)
		if apierrors.IsForbidden(err) {
			continue
		}
		if err != nil {
			return nil, "", err
		}
		searched = append(searched, n.Name)
		if res != nil {
			return res, "", nil
		}
	}
	if len(searched) == 0 {
		return nil, "", errors.New("you may not list AccessKeys in any namespace")
	}
	return nil, "the namespaces you may list AccessKeys in: " + strings.Join(searched, ", "), nil
}

// findIn looks in one namespace, or in all with ns "". The current key ID is
// a selectable field; previous key IDs are not, so those are found by
// listing and filtering here.
func (s *session) findIn(key keyformat.Key, ns string) (*WhoisResult, error) {
	var opts []client.ListOption
	if ns != "" {
		opts = append(opts, client.InNamespace(ns))
	}
	var byID keyward.AccessKeyList
	if err := s.c.List(s.ctx, &byID, append(opts, client.MatchingFields{"status.keyID": key.ID})...); err != nil {
		return nil, err
	}
	for i := range byID.Items {
		if res := match(&byID.Items[i], key); res != nil {
			return res, nil
		}
	}
	var every keyward.AccessKeyList
	if err := s.c.List(s.ctx, &every, opts...); err != nil {
		return nil, err
	}
	for i := range every.Items {
		if res := match(&every.Items[i], key); res != nil {
			return res, nil
		}
	}
	return nil, nil
}

// match checks key against k's current and previous key, secret included,
// as the verifier does (secrets.MatchStatus). A previous key is named
// also after its grace period, to say when it ended.
func match(k *keyward.AccessKey, key keyformat.Key) *WhoisResult {
	res := &WhoisResult{KeyID: key.ID, Namespace: k.Namespace, Name: k.Name, Application: k.Spec.Application,
		Owner: k.Spec.Owner, Phase: string(k.Status.Phase), SecretChecked: true}
	pk := k.Status.PreviousKey
	switch secrets.MatchStatus(key, k) {
	case keyformat.MatchCurrent:
		res.Which = "current"
		return res
	case keyformat.MatchPrevious:
		res.Which = "previous"
		res.ValidUntil, res.validUntil = rfc3339(pk.ValidUntil.Time), pk.ValidUntil.Time
		return res
	}
	if k.Status.KeyID == key.ID && k.Status.SecretHash == "" && (k.Spec.Revoked || k.Status.Phase == keyward.PhaseRevoked) {
		// Revocation destroyed the hash: the ID alone names the key.
		res.Which, res.SecretChecked = "current", false
		return res
	}
	return nil
}

func printWhois(w io.Writer, r WhoisResult, now time.Time) error {
	tw := printers.GetNewTabWriter(w)
	line := func(k, v string) { _, _ = fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	line("Key ID", r.KeyID)
	switch {
	case r.Which == "previous" && r.validUntil.After(now):
		line("Which", "previous key (rotated out), verifies until "+r.ValidUntil+" ("+until(r.validUntil, now)+")")
	case r.Which == "previous":
		line("Which", "previous key (rotated out), its grace period ended "+r.ValidUntil+" ("+until(r.validUntil, now)+")")
	case !r.SecretChecked:
		line("Which", "current key ID of a revoked key (its hash is cleared, so the secret could not be checked)")
	default:
		line("Which", "current key")
	}
	line("Namespace", r.Namespace)
	line("AccessKey", r.Name)
	line("Application", r.Application)
	line("Owner", or(r.Owner, none))
	line("Phase", or(r.Phase, none))
	return tw.Flush()
}
