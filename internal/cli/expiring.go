package cli

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

func newExpiringCommand(o *Options) *cobra.Command {
	var l *listing
	within := 720 * time.Hour
	cmd := &cobra.Command{
		Use:   "expiring [--within 30d] [-l SELECTOR] [-A] [-o wide|name|json|yaml|jsonpath=...|custom-columns=...]",
		Short: "List keys whose expiry (status.expiresAt) falls within the window, soonest first",
		Long: `Lists the keys whose effective expiry (status.expiresAt: spec.expiresAt, capped by
the tenant's maxKeyLifetime) lies between now and now + --within, soonest first.
Revoked and already expired keys are left out. -o prints the AccessKeys
themselves, as kubectl get does.`,
		Example: `  kubectl keyward expiring -n shop
  kubectl keyward expiring -A --within 7d
  kubectl keyward expiring -A -o name`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("expiring takes no arguments, got %q", strings.Join(args, " "))
			}
			if within <= 0 {
				return fmt.Errorf("--within must be positive")
			}
			return l.check()
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := o.session(cmd)
			if err != nil {
				return err
			}
			keys, err := s.listKeys(l.all, l.selector)
			if err != nil {
				return err
			}
			views := expiringWithin(keys, s.Now(), within)
			if !l.human() {
				return s.printObjects(l, views, false)
			}
			if len(views) == 0 {
				where := "in namespace " + s.ns
				if l.all {
					where = "in any namespace"
				}
				if l.selector != "" {
					where += " matching -l " + l.selector
				}
				_, _ = fmt.Fprintf(s.ErrOut, "No AccessKeys expire within %s %s.\n", formatDuration(within), where)
				return nil
			}
			return s.printTable(l, tableOf(expiringColumns(s.Now()), views))
		},
	}
	cmd.Flags().Var(&durationValue{d: &within}, "within", "the window, from now: e.g. 30d, 7d, 36h")
	l = newListing(cmd, "look in every namespace")
	return cmd
}

// expiringWithin keeps the keys whose effective expiry lies in [now,
// now+within), soonest first.
func expiringWithin(keys []keyward.AccessKey, now time.Time, within time.Duration) []KeyView {
	views := []KeyView{}
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
	return views
}

// expiringColumns are the columns of expiring; -o wide adds when the key
// was last used, its Secret and its description.
func expiringColumns(now time.Time) []column {
	return []column{
		{name: "Name", cell: func(v KeyView) string { return v.Name }},
		{name: "Expires At", cell: func(v KeyView) string { return v.ExpiresAt }},
		{name: "Expires In", cell: func(v KeyView) string { return expiresIn(v, now) }},
		{name: "Phase", cell: func(v KeyView) string { return or(v.Phase, none) }},
		{name: "Application", cell: func(v KeyView) string { return v.Application }},
		{name: "Owner", cell: func(v KeyView) string { return or(v.Owner, none) }},
		{name: "Key ID", cell: func(v KeyView) string { return short(v.KeyID) }},
		{name: "Last Used", wide: true, cell: func(v KeyView) string { return lastUsed(v, now) }},
		{name: "Secret", wide: true, cell: func(v KeyView) string { return or(v.SecretName, none) }},
		{name: "Description", wide: true, cell: func(v KeyView) string { return or(v.Description, none) }},
	}
}
