package cli

import (
	"fmt"
	"sort"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// recentEvents is how many Events status shows for one key.
const recentEvents = 10

func newStatusCommand(o *Options) *cobra.Command {
	var l *listing
	cmd := &cobra.Command{
		Use:   "status [KEY] [-l SELECTOR] [-A] [-o wide|name|json|yaml|jsonpath=...|custom-columns=...]",
		Short: "Show the state of one AccessKey (with its recent Events) or of the keys in the namespace",
		Long: `Without KEY: a table of the namespace's keys (-A: of every namespace; -l: those
matching a label selector). With KEY: that key in detail, with its recent Events.
-o prints the AccessKeys themselves, as kubectl get does: json, yaml, name,
jsonpath=..., custom-columns=..., go-template=...; -o wide adds columns.`,
		Example: `  kubectl keyward status -n shop
  kubectl keyward status dana-key -n shop
  kubectl keyward status -A -l team=payments -o wide
  kubectl keyward status -n shop -o custom-columns=NAME:.metadata.name,KEY:.status.keyID --no-headers
  kubectl keyward status dana-key -n shop -o jsonpath='{.status.phase}'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return fmt.Errorf("status takes at most one AccessKey, got %d arguments", len(args))
			}
			if len(args) == 1 && l.all {
				return fmt.Errorf("status KEY looks in one namespace: use -n instead of -A")
			}
			if len(args) == 1 && l.selector != "" {
				return fmt.Errorf("status takes either a KEY or -l, not both")
			}
			return l.check()
		},
		ValidArgsFunction: o.completeKeys,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := o.session(cmd)
			if err != nil {
				return err
			}
			if len(args) == 1 {
				return s.statusOne(args[0], l)
			}
			return s.statusList(l)
		},
	}
	l = newListing(cmd, "list the keys of every namespace")
	return cmd
}

func (s *session) statusOne(name string, l *listing) error {
	k, err := s.getServed(name)
	if err != nil {
		return err
	}
	v := viewOf(k)
	switch {
	case l.output() == "":
		v.Events, v.EventsError = s.events(k)
		return printKeyDetail(s.Out, v, s.Now())
	case l.human():
		return s.printTable(l, tableOf(statusColumns(s.Now()), []KeyView{v}))
	}
	return s.printObjects(l, []KeyView{v}, true)
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

// listKeys lists the keys of the namespace (all: of every namespace)
// matching the label selector, by namespace and name. It reads them as the
// API serves them and keeps that form for -o (see served).
func (s *session) listKeys(all bool, selector string) ([]keyward.AccessKey, error) {
	sel, err := parseSelector(selector)
	if err != nil {
		return nil, err
	}
	var list unstructured.UnstructuredList
	list.SetGroupVersionKind(keyward.GroupVersion.WithKind("AccessKeyList"))
	opts := []client.ListOption{client.MatchingLabelsSelector{Selector: sel}}
	if !all {
		opts = append(opts, client.InNamespace(s.ns))
	}
	if err := s.c.List(s.ctx, &list, opts...); err != nil {
		return nil, explain(err)
	}
	keys := make([]keyward.AccessKey, len(list.Items))
	for i := range list.Items {
		if err := s.keep(&list.Items[i], &keys[i]); err != nil {
			return nil, err
		}
	}
	sort.SliceStable(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	return keys, nil
}

// keep records an AccessKey as the API served it and decodes it into k.
func (s *session) keep(u *unstructured.Unstructured, k *keyward.AccessKey) error {
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, k); err != nil {
		return fmt.Errorf("accesskey %s/%s: %v", u.GetNamespace(), u.GetName(), err)
	}
	if s.served == nil {
		s.served = map[string]*unstructured.Unstructured{}
	}
	s.served[u.GetNamespace()+"/"+u.GetName()] = u
	return nil
}

// getServed reads one key as the API serves it (for -o).
func (s *session) getServed(name string) (*keyward.AccessKey, error) {
	var u unstructured.Unstructured
	u.SetGroupVersionKind(keyward.GroupVersion.WithKind("AccessKey"))
	if err := s.c.Get(s.ctx, client.ObjectKey{Namespace: s.ns, Name: name}, &u); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("accesskey %q not found in namespace %q", name, s.ns)
		}
		return nil, explain(err)
	}
	var k keyward.AccessKey
	return &k, s.keep(&u, &k)
}

func (s *session) statusList(l *listing) error {
	keys, err := s.listKeys(l.all, l.selector)
	if err != nil {
		return err
	}
	views := make([]KeyView, 0, len(keys))
	for i := range keys {
		views = append(views, viewOf(&keys[i]))
	}
	if !l.human() {
		return s.printObjects(l, views, false)
	}
	if len(views) == 0 {
		_, _ = fmt.Fprintln(s.ErrOut, noKeys(l.all, s.ns, l.selector))
		return nil
	}
	return s.printTable(l, tableOf(statusColumns(s.Now()), views))
}

func noKeys(all bool, ns, selector string) string {
	where := "in namespace " + ns
	if all {
		where = "in any namespace"
	}
	if selector != "" {
		return fmt.Sprintf("No AccessKeys %s match -l %s.", where, selector)
	}
	if all {
		return "No AccessKeys found."
	}
	return fmt.Sprintf("No AccessKeys found in namespace %s.", ns)
}
