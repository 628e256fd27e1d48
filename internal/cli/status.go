package cli

import (
	"fmt"
	"sort"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// recentEvents is how many Events status shows for one key.
const recentEvents = 10

func newStatusCommand(o *Options) *cobra.Command {
	var output string
	var all bool
	cmd := &cobra.Command{
		Use:   "status [KEY]",
		Short: "Show the state of one AccessKey (with its recent Events) or of all keys in the namespace",
		Example: `  kubectl keyward status -n shop
  kubectl keyward status dana-key -n shop
  kubectl keyward status -A -o yaml`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return fmt.Errorf("status takes at most one AccessKey, got %d arguments", len(args))
			}
			if len(args) == 1 && all {
				return fmt.Errorf("status KEY looks in one namespace: use -n instead of -A")
			}
			return checkOutput(output)
		},
		ValidArgsFunction: o.completeKeys,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := o.session(cmd)
			if err != nil {
				return err
			}
			if len(args) == 1 {
				return s.statusOne(args[0], output)
			}
			return s.statusList(all, output)
		},
	}
	outputFlag(cmd, &output)
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "list the keys of every namespace")
	return cmd
}

func (s *session) statusOne(name, output string) error {
	k, err := s.getKey(name)
	if err != nil {
		return err
	}
	v := viewOf(k)
	v.Events, v.EventsError = s.events(k)
	if output != "" {
		return printStructured(s.Out, output, v)
	}
	return printKeyDetail(s.Out, v, s.Now())
}

// events returns the key's most recent Events, oldest first, or why they
// cannot be read (developers, for one, may not list Events).
func (s *session) events(k *keyward.AccessKey) ([]EventView, string) {
	var list corev1.EventList
	err := s.c.List(s.ctx, &list, client.InNamespace(k.Namespace),
		client.MatchingFields{"involvedObject.uid": string(k.UID)})
	if err != nil {
		if apierrors.IsForbidden(err) {
			return nil, fmt.Sprintf("you may not list events in namespace %s", k.Namespace)
		}
		return nil, "events could not be read: " + oneLine(err.Error())
	}
	views := make([]EventView, 0, len(list.Items))
	for i := range list.Items {
		views = append(views, eventViewOf(&list.Items[i]))
	}
	sort.SliceStable(views, func(i, j int) bool { return views[i].at.Before(views[j].at) })
	if len(views) > recentEvents {
		views = views[len(views)-recentEvents:]
	}
	return views, ""
}

func (s *session) listKeys(all bool) ([]keyward.AccessKey, error) {
	var list keyward.AccessKeyList
	var opts []client.ListOption
	if !all {
		opts = append(opts, client.InNamespace(s.ns))
	}
	if err := s.c.List(s.ctx, &list, opts...); err != nil {
		return nil, explain(err)
	}
	sort.SliceStable(list.Items, func(i, j int) bool {
		a, b := list.Items[i], list.Items[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	return list.Items, nil
}

func (s *session) statusList(all bool, output string) error {
	keys, err := s.listKeys(all)
	if err != nil {
		return err
	}
	views := make([]KeyView, 0, len(keys))
	for i := range keys {
		views = append(views, viewOf(&keys[i]))
	}
	if output != "" {
		return printStructured(s.Out, output, ListView[KeyView]{Items: views})
	}
	if len(views) == 0 {
		_, _ = fmt.Fprintln(s.ErrOut, noKeys(all, s.ns))
		return nil
	}
	return printKeyTable(s.Out, views, all, s.Now())
}

func noKeys(all bool, ns string) string {
	if all {
		return "No AccessKeys found."
	}
	return fmt.Sprintf("No AccessKeys found in namespace %s.", ns)
}
