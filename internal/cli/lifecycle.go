package cli

import (
	"bufio"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

func newRevokeCommand(o *Options) *cobra.Command {
	var yes, waitDone bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "revoke KEY [--yes]",
		Short: "Revoke a key for good: its key material is destroyed (needs the revoke verb, keyward-tenant-admin)",
		Long: `Sets spec.revoked: true. Revocation is irreversible: the key stops verifying and
its Secret is deleted. Asks for confirmation on the terminal unless --yes is given,
then waits until the key's phase is Revoked.`,
		Example:           `  kubectl keyward revoke dana-key -n shop --yes`,
		Args:              keyArg,
		ValidArgsFunction: o.completeKeys,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := o.session(cmd)
			if err != nil {
				return err
			}
			return s.revoke(args[0], yes, waitDone, timeout)
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	waitFlags(cmd, &waitDone, &timeout, true, "the key's phase is Revoked")
	return cmd
}

func (s *session) revoke(name string, yes, waitDone bool, timeout time.Duration) error {
	k, err := s.getKey(name)
	if err != nil {
		return err
	}
	if k.Spec.Revoked && k.Status.Phase == keyward.PhaseRevoked {
		_, _ = fmt.Fprintf(s.Out, "accesskey %s is already revoked\n", ref(k))
		return nil
	}
	if !yes {
		if err := s.confirmRevoke(k); err != nil {
			return err
		}
	}
	if err := s.mergePatch(k, map[string]any{"spec": map[string]any{"revoked": true}}); err != nil {
		return err
	}
	if waitDone {
		if _, err := s.waitFor(k, timeout, "accesskey "+ref(k)+" to reach phase Revoked", func(k *keyward.AccessKey) (bool, error) {
			return k.Status.Phase == keyward.PhaseRevoked, nil
		}); err != nil {
			return err
		}
		_, err = fmt.Fprintf(s.Out, "accesskey %s revoked: key ID %s no longer verifies and its Secret is deleted\n", ref(k), short(k.Status.KeyID))
		return err
	}
	_, err = fmt.Fprintf(s.Out, "accesskey %s: revocation requested (spec.revoked: true)\n", ref(k))
	return err
}

func (s *session) confirmRevoke(k *keyward.AccessKey) error {
	if !s.StdinIsTerminal() {
		return fmt.Errorf("revoking accesskey %s cannot be undone: confirm with --yes (standard input is not a terminal, so there is no one to ask)", ref(k))
	}
	_, _ = fmt.Fprintf(s.ErrOut, "Revoke accesskey %s (key ID %s, application %s, owner %s)?\n"+
		"Its key material is destroyed and this cannot be undone. Type yes to revoke: ",
		ref(k), short(k.Status.KeyID), k.Spec.Application, or(k.Spec.Owner, none))
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
	use, short, verb := "deactivate", "Deactivate a key: it stops verifying, its key material is kept (spec.state: Inactive)", "deactivated"
	if state == keyward.StateActive {
		use, short, verb = "activate", "Reactivate a deactivated key: the same key verifies again (spec.state: Active)", "activated"
	}
	var waitDone bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:               use + " KEY",
		Short:             short,
		Example:           "  kubectl keyward " + use + " dana-key -n shop",
		Args:              keyArg,
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
				return revokedErr(k, "it cannot be "+verb)
			}
			if err := s.mergePatch(k, map[string]any{"spec": map[string]any{"state": string(state)}}); err != nil {
				return err
			}
			return s.reportChange(k, waitDone, timeout, verb, fmt.Sprintf("spec.state: %s", state))
		},
	}
	waitFlags(cmd, &waitDone, &timeout, true, "the controller has acted on the change, and print the key's phase")
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
