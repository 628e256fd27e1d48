package cli

import (
	"bufio"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/printers"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

func newRevokeCommand(o *Options) *cobra.Command {
	var yes, waitDone bool
	var selector string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "revoke (KEY... | -l SELECTOR) [--yes]",
		Short: "Revoke keys for good: their key material is destroyed (needs the revoke verb, keyward-tenant-admin)",
		Long: `Sets spec.revoked: true on each key named, or on each key of the namespace that
matches -l. Revocation is irreversible: a key stops verifying and its Secret is
deleted. Asks once for confirmation on the terminal, listing the keys, unless
--yes is given; then waits until each key's phase is Revoked.`,
		Example: `  kubectl keyward revoke dana-key -n shop --yes
  kubectl keyward revoke ci-1 ci-2 ci-3 -n shop
  kubectl keyward revoke -l app.kubernetes.io/part-of=analytics -n shop`,
		Args:              keysArgs(&selector),
		ValidArgsFunction: o.completeMoreKeys,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := o.session(cmd)
			if err != nil {
				return err
			}
			keys, err := s.selectKeys(args, selector)
			if err != nil {
				return err
			}
			return s.revoke(keys, yes, waitDone, timeout)
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	selectorFlag(cmd, &selector)
	waitFlags(cmd, &waitDone, &timeout, true, "each key's phase is Revoked")
	return cmd
}

// keysArgs is the Args check of commands that take KEY... or -l.
func keysArgs(selector *string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) == 0 && *selector == "":
			return fmt.Errorf("%s needs the names of AccessKeys or a label selector (-l): %s", cmd.Name(), cmd.UseLine())
		case len(args) > 0 && *selector != "":
			return fmt.Errorf("%s takes AccessKey names or -l, not both", cmd.Name())
		}
		_, err := parseSelector(*selector)
		return err
	}
}

// selectKeys reads the keys named, or those of the namespace matching the
// selector. A name that does not exist fails before anything changes.
func (s *session) selectKeys(names []string, selector string) ([]*keyward.AccessKey, error) {
	var keys []*keyward.AccessKey
	if selector != "" {
		list, err := s.listKeys(false, selector)
		if err != nil {
			return nil, err
		}
		if len(list) == 0 {
			return nil, fmt.Errorf("no AccessKeys in namespace %s match -l %s", s.ns, selector)
		}
		for i := range list {
			keys = append(keys, &list[i])
		}
		return keys, nil
	}
	seen := map[string]bool{}
	for _, name := range names {
		if seen[name] {
			continue
		}
		seen[name] = true
		k, err := s.getKey(name)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func (s *session) revoke(keys []*keyward.AccessKey, yes, waitDone bool, timeout time.Duration) error {
	var todo []*keyward.AccessKey
	for _, k := range keys {
		if k.Spec.Revoked && k.Status.Phase == keyward.PhaseRevoked {
			_, _ = fmt.Fprintf(s.Out, "accesskey %s is already revoked\n", ref(k))
			continue
		}
		todo = append(todo, k)
	}
	if len(todo) == 0 {
		return nil
	}
	if !yes {
		if err := s.confirmRevoke(todo); err != nil {
			return err
		}
	}
	return s.each(todo, "revoked", func(k *keyward.AccessKey) error {
		if err := s.mergePatch(k, map[string]any{"spec": map[string]any{"revoked": true}}); err != nil {
			return err
		}
		if !waitDone {
			_, err := fmt.Fprintf(s.Out, "accesskey %s: revocation requested (spec.revoked: true)\n", ref(k))
			return err
		}
		if _, err := s.waitFor(k, timeout, "accesskey "+ref(k)+" to reach phase Revoked", func(k *keyward.AccessKey) (bool, error) {
			return k.Status.Phase == keyward.PhaseRevoked, nil
		}); err != nil {
			return err
		}
		_, err := fmt.Fprintf(s.Out, "accesskey %s revoked: key ID %s no longer verifies and its Secret is deleted\n", ref(k), short(k.Status.KeyID))
		return err
	})
}

// each applies act to every key, on through failures, and reports the
// failures as one error: the error itself for a single key; keys refused for
// the same reason are named together.
func (s *session) each(keys []*keyward.AccessKey, verb string, act func(*keyward.AccessKey) error) error {
	var reasons []string
	refsBy := map[string][]string{}
	var last error
	failed := 0
	for _, k := range keys {
		err := act(k)
		if err == nil {
			continue
		}
		last, failed = err, failed+1
		msg := oneLine(err.Error())
		if _, seen := refsBy[msg]; !seen {
			reasons = append(reasons, msg)
		}
		refsBy[msg] = append(refsBy[msg], ref(k))
	}
	switch {
	case failed == 0:
		return nil
	case len(keys) == 1:
		return last
	}
	parts := make([]string, 0, len(reasons))
	for _, msg := range reasons {
		parts = append(parts, strings.Join(refsBy[msg], ", ")+": "+msg)
	}
	return fmt.Errorf("%d of %d accesskeys not %s: %s", failed, len(keys), verb, strings.Join(parts, "; "))
}

// confirmRevoke asks once, on the terminal, listing every key.
func (s *session) confirmRevoke(keys []*keyward.AccessKey) error {
	refs := make([]string, 0, len(keys))
	for _, k := range keys {
		refs = append(refs, ref(k))
	}
	if !s.StdinIsTerminal() {
		what := "accesskey " + refs[0]
		if len(keys) > 1 {
			what = fmt.Sprintf("%d accesskeys (%s)", len(keys), strings.Join(refs, ", "))
		}
		return fmt.Errorf("revoking %s cannot be undone: confirm with --yes (standard input is not a terminal, so there is no one to ask)", what)
	}
	if len(keys) == 1 {
		k := keys[0]
		_, _ = fmt.Fprintf(s.ErrOut, "Revoke accesskey %s (key ID %s, application %s, owner %s)?\n"+
			"Its key material is destroyed and this cannot be undone. Type yes to revoke: ",
			ref(k), short(k.Status.KeyID), k.Spec.Application, or(k.Spec.Owner, none))
	} else {
		_, _ = fmt.Fprintf(s.ErrOut, "Revoke these %d accesskeys?\n", len(keys))
		tw := printers.GetNewTabWriter(s.ErrOut)
		_, _ = fmt.Fprintln(tw, "  NAMESPACE\tNAME\tKEY ID\tAPPLICATION\tOWNER\tPHASE")
		for _, k := range keys {
			_, _ = fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", k.Namespace, k.Name, short(k.Status.KeyID), k.Spec.Application,
				or(k.Spec.Owner, none), or(string(k.Status.Phase), none))
		}
		_ = tw.Flush()
		_, _ = fmt.Fprint(s.ErrOut, "Their key material is destroyed and this cannot be undone. Type yes to revoke all of them: ")
	}
	line, err := bufio.NewReader(s.In).ReadString('\n')
	if err != nil && line == "" {
		return fmt.Errorf("not revoked: no answer")
	}
	if a := strings.ToLower(strings.TrimSpace(line)); a != "yes" && a != "y" {
		return fmt.Errorf("not revoked: the answer was not yes")
	}
	return nil
}

// newStateCommand is deactivate (Inactive) or activate (Active).
func newStateCommand(o *Options, state keyward.KeyState) *cobra.Command {
	use, short, verb := "deactivate", "Deactivate keys: they stop verifying, their key material is kept (spec.state: Inactive)", "deactivated"
	if state == keyward.StateActive {
		use, short, verb = "activate", "Reactivate deactivated keys: the same keys verify again (spec.state: Active)", "activated"
	}
	var waitDone bool
	var selector string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   use + " (KEY... | -l SELECTOR)",
		Short: short,
		Example: "  kubectl keyward " + use + " dana-key -n shop\n" +
			"  kubectl keyward " + use + " -l team=payments -n shop",
		Args:              keysArgs(&selector),
		ValidArgsFunction: o.completeMoreKeys,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := o.session(cmd)
			if err != nil {
				return err
			}
			keys, err := s.selectKeys(args, selector)
			if err != nil {
				return err
			}
			return s.each(keys, verb, func(k *keyward.AccessKey) error {
				if k.Spec.Revoked {
					return revokedErr(k, "it cannot be "+verb)
				}
				if err := s.mergePatch(k, map[string]any{"spec": map[string]any{"state": string(state)}}); err != nil {
					return err
				}
				return s.reportChange(k, waitDone, timeout, verb, fmt.Sprintf("spec.state: %s", state))
			})
		},
	}
	selectorFlag(cmd, &selector)
	waitFlags(cmd, &waitDone, &timeout, true, "the controller has acted on each change, and print the key's phase")
	return cmd
}

// reportChange waits (with --wait) for the controller to act on the patched
// key and says where the key ended up.
func (s *session) reportChange(k *keyward.AccessKey, waitDone bool, timeout time.Duration, verb, change string) error {
	if !waitDone {
		_, err := fmt.Fprintf(s.Out, "accesskey %s %s (%s)\n", ref(k), verb, change)
		return err
	}
	k, err := s.waitFor(k, timeout, "the controller to act on accesskey "+ref(k), reconciled(k.Generation))
	if err != nil {
		return err
	}
	reason, msg := ready(k)
	_, err = fmt.Fprintf(s.Out, "accesskey %s %s (%s): phase %s, reason %s: %s\n", ref(k), verb, change,
		or(string(k.Status.Phase), none), or(reason, none), or(msg, none))
	return err
}

func newExtendCommand(o *Options) *cobra.Command {
	var by time.Duration
	byFlag := &durationValue{d: &by}
	var untilFlag string
	var waitDone bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "extend KEY (--by 30d | --until 2027-01-31T00:00:00Z)",
		Short: "Move a key's expiry (spec.expiresAt); an expired key becomes Active again with the same key material",
		Long: `--by adds to the key's current expiry (or to now, when it has already expired).
--until sets the expiry to an RFC 3339 time. The tenant's maxKeyLifetime still
caps the effective expiry (status.expiresAt); extend says so when it does.`,
		Example: `  kubectl keyward extend dana-key -n shop --by 30d
  kubectl keyward extend dana-key -n shop --until 2027-01-31T00:00:00Z`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := keyArg(cmd, args); err != nil {
				return err
			}
			switch {
			case byFlag.set == (untilFlag != ""):
				return fmt.Errorf("extend needs exactly one of --by (such as 30d) or --until (such as 2027-01-31T00:00:00Z)")
			case byFlag.set && by <= 0:
				return fmt.Errorf("--by must be positive")
			case untilFlag != "":
				if _, err := keyward.Timestamp(untilFlag).Parse(); err != nil {
					return fmt.Errorf("--until: %v", err)
				}
			}
			return nil
		},
		ValidArgsFunction: o.completeKeys,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := o.session(cmd)
			if err != nil {
				return err
			}
			k, err := s.getKey(args[0])
			if err != nil {
				return err
			}
			if k.Spec.Revoked {
				return revokedErr(k, "its expiry no longer matters")
			}
			var target time.Time
			if byFlag.set {
				base, ok := currentExpiry(k)
				if !ok {
					return fmt.Errorf("accesskey %s never expires, so there is nothing to extend: use --until to give it an expiry", ref(k))
				}
				if now := s.Now(); base.Before(now) {
					base = now
				}
				target = base.Add(by)
			} else {
				target, _ = keyward.Timestamp(untilFlag).Parse()
			}
			if target.After(keyward.MaxTime) {
				return fmt.Errorf("the new expiry would be after %s, the latest the API accepts", rfc3339(keyward.MaxTime))
			}
			ts := rfc3339(target)
			if err := s.mergePatch(k, map[string]any{"spec": map[string]any{"expiresAt": ts}}); err != nil {
				return err
			}
			if err := s.reportChange(k, waitDone, timeout, "extended", "spec.expiresAt: "+ts); err != nil {
				return err
			}
			if waitDone {
				return s.warnCapped(k.Name, target)
			}
			return nil
		},
	}
	cmd.Flags().Var(byFlag, "by", "add this much to the current expiry, e.g. 30d, 36h")
	cmd.Flags().StringVar(&untilFlag, "until", "", "new expiry, an RFC 3339 time such as 2027-01-31T00:00:00Z")
	waitFlags(cmd, &waitDone, &timeout, true, "the controller has acted on the change, and print the key's phase")
	return cmd
}

// currentExpiry is the key's effective expiry, or the one it asks for when
// it has not been reconciled yet.
func currentExpiry(k *keyward.AccessKey) (time.Time, bool) {
	if k.Status.ExpiresAt != nil {
		return k.Status.ExpiresAt.Time, true
	}
	if k.Spec.ExpiresAt != nil {
		if t, err := k.Spec.ExpiresAt.Parse(); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// warnCapped says when the tenant's lifetime limit keeps the effective
// expiry before the one asked for.
func (s *session) warnCapped(name string, target time.Time) error {
	k, err := s.getKey(name)
	if err != nil {
		return err
	}
	if e := k.Status.ExpiresAt; e != nil && e.Time.Before(target.Truncate(time.Second)) {
		_, _ = fmt.Fprintf(s.ErrOut, "warning: accesskey %s expires at %s, not %s: the tenant's maxKeyLifetime in force when it was issued caps it (status.lifetimeLimit)\n",
			ref(k), rfc3339(e.Time), rfc3339(target))
	} else if e != nil {
		_, _ = fmt.Fprintf(s.Out, "accesskey %s now expires at %s (%s)\n", ref(k), rfc3339(e.Time), until(e.Time, s.Now()))
	}
	return nil
}
