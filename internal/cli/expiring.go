package cli

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/printers"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

func newExpiringCommand(o *Options) *cobra.Command {
	var output string
	var all bool
	within := 720 * time.Hour
	withinFlag := &durationValue{d: &within}
	cmd := &cobra.Command{
		Use:   "expiring [--within 720h] [-A]",
		Short: "List keys whose expiry (status.expiresAt) falls within the window, soonest first",
		Long: `Lists the keys whose effective expiry (status.expiresAt: spec.expiresAt, capped by
the tenant's maxKeyLifetime) lies between now and now + --within, soonest first.
Revoked and already expired keys are left out.`,
		Example: `  kubectl keyward expiring -n shop
  kubectl keyward expiring -A --within 7d`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("expiring takes no arguments, got %q", strings.Join(args, " "))
			}
			if within <= 0 {
				return fmt.Errorf("--within must be positive")
			}
			return checkOutput(output)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := o.session(cmd)
			if err != nil {
				return err
			}
			keys, err := s.listKeys(all)
			if err != nil {
				return err
			}
			views := expiringWithin(keys, s.Now(), within)
			if output != "" {
				return printStructured(s.Out, output, ListView[KeyView]{Items: views})
			}
			if len(views) == 0 {
				where := "in namespace " + s.ns
				if all {
					where = "in any namespace"
				}
				_, _ = fmt.Fprintf(s.ErrOut, "No AccessKeys expire within %s %s.\n", within, where)
				return nil
			}
			return printExpiring(s.Out, views, all, s.Now())
		},
	}
	cmd.Flags().Var(withinFlag, "within", "the window, from now: e.g. 720h, 30d, 36h")
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "look in every namespace")
	outputFlag(cmd, &output)
	return cmd
}

// expiringWithin keeps the keys whose effective expiry lies in [now,
// now+within), soonest first.
func expiringWithin(keys []keyward.AccessKey, now time.Time, within time.Duration) []KeyView {
	var views []KeyView
	for i := range keys {
		k := &keys[i]
		e := k.Status.ExpiresAt
		if e == nil || k.Spec.Revoked || k.Status.Phase == keyward.PhaseRevoked {
			continue
		}
		if e.Time.Before(now) || !e.Time.Before(now.Add(within)) {
			continue
		}
		views = append(views, viewOf(k))
	}
	sort.SliceStable(views, func(i, j int) bool { return views[i].expiresAt.Before(*views[j].expiresAt) })
	if views == nil {
		views = []KeyView{}
	}
	return views
}

func printExpiring(w io.Writer, views []KeyView, withNamespace bool, now time.Time) error {
	tw := printers.GetNewTabWriter(w)
	cols := []string{"NAME", "EXPIRES AT", "EXPIRES IN", "PHASE", "APPLICATION", "OWNER", "KEY ID"}
	if withNamespace {
		cols = append([]string{"NAMESPACE"}, cols...)
	}
	_, _ = fmt.Fprintln(tw, strings.Join(cols, "\t"))
	for _, v := range views {
		row := []string{v.Name, v.ExpiresAt, expiresIn(v, now), or(v.Phase, none), v.Application, or(v.Owner, none), short(v.KeyID)}
		if withNamespace {
			row = append([]string{v.Namespace}, row...)
		}
		_, _ = fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}
