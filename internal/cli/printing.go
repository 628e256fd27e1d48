package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/kubectl/pkg/cmd/get"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// listing holds the flags of the commands that list AccessKeys (status,
// expiring): kubectl get's own printing flags, so -o wide|name|json|yaml|
// jsonpath=...|custom-columns=...|go-template=..., --no-headers,
// --show-labels, -L and --show-managed-fields behave as in kubectl get, and
// -l/--selector and -A.
type listing struct {
	print    *get.PrintFlags
	selector string
	all      bool
}

func newListing(cmd *cobra.Command, allUsage string) *listing {
	l := &listing{print: get.NewGetPrintFlags()}
	// The plugin sorts its lists itself (by name; expiring by expiry), and
	// every row is an AccessKey: no --sort-by, no --show-kind.
	l.print.HumanReadableFlags.SortBy = nil
	l.print.HumanReadableFlags.ShowKind = nil
	l.print.AddFlags(cmd)
	selectorFlag(cmd, &l.selector)
	cmd.Flags().BoolVarP(&l.all, "all-namespaces", "A", false, allUsage)
	return l
}

// selectorFlag adds -l/--selector, as kubectl has it.
func selectorFlag(cmd *cobra.Command, to *string) {
	cmd.Flags().StringVarP(to, "selector", "l", "", "label selector to filter on, as kubectl's (e.g. -l team=payments,env!=prod)")
}

// parseSelector checks a -l value before anything is read.
func parseSelector(s string) (labels.Selector, error) {
	sel, err := labels.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("-l %q: %v", s, err)
	}
	return sel, nil
}

// output is the -o value.
func (l *listing) output() string { return *l.print.OutputFormat }

// human reports whether the output is the plugin's own table (no -o, or -o wide).
func (l *listing) human() bool { return l.output() == "" || l.output() == "wide" }

// check refuses an unknown -o or a bad -l before anything is read.
func (l *listing) check() error {
	if _, err := l.print.ToPrinter(); err != nil {
		if genericclioptions.IsNoCompatiblePrinterError(err) {
			return fmt.Errorf("unknown output format %q: use one of %s, or leave -o out for a table",
				l.output(), strings.Join(l.print.AllowedFormats(), ", "))
		}
		return err
	}
	_, err := parseSelector(l.selector)
	return err
}

// printTable prints rows of AccessKeys as kubectl prints a table: columns of
// priority 1 only with -o wide, a NAMESPACE column with -A, no headers with
// --no-headers, label columns with -L and --show-labels.
func (s *session) printTable(l *listing, t *metav1.Table) error {
	if l.all {
		_ = l.print.EnsureWithNamespace()
	}
	p, err := l.print.ToPrinter()
	if err != nil {
		return err
	}
	return p.PrintObj(t, s.Out)
}

// printObjects prints the AccessKeys themselves, as kubectl get would:
// -o json|yaml|name|jsonpath|custom-columns|go-template. Like kubectl, it
// prints them exactly as the API served them (unstructured, defaults
// included), so times are the API's strings and missing fields <none>.
func (s *session) printObjects(l *listing, views []KeyView, one bool) error {
	p, err := l.print.ToPrinter()
	if err != nil {
		return err
	}
	list := &unstructured.UnstructuredList{Items: []unstructured.Unstructured{}}
	list.SetGroupVersionKind(keyward.GroupVersion.WithKind("AccessKeyList"))
	for _, v := range views {
		u, ok := s.served[v.Namespace+"/"+v.Name]
		if !ok {
			return fmt.Errorf("accesskey %s/%s was not read as the API serves it", v.Namespace, v.Name)
		}
		list.Items = append(list.Items, *u)
	}
	if one && len(list.Items) == 1 {
		return p.PrintObj(&list.Items[0], s.Out)
	}
	return p.PrintObj(list, s.Out)
}

// column is one column of a table: its header, whether only -o wide shows
// it, and its cell for a key.
type column struct {
	name string
	wide bool
	cell func(v KeyView) string
}

// tableOf builds the kubectl table of keys.
func tableOf(cols []column, views []KeyView) *metav1.Table {
	t := &metav1.Table{}
	for _, c := range cols {
		def := metav1.TableColumnDefinition{Name: c.name, Type: "string"}
		if c.wide {
			def.Priority = 1
		}
		t.ColumnDefinitions = append(t.ColumnDefinitions, def)
	}
	for _, v := range views {
		row := metav1.TableRow{Object: runtime.RawExtension{Object: v.key}}
		for _, c := range cols {
			row.Cells = append(row.Cells, c.cell(v))
		}
		t.Rows = append(t.Rows, row)
	}
	return t
}
