package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"keyward.dev/keyward/internal/version"
)

// managerLabel is the label every install method puts on the manager's
// Deployment (config/manager, the chart, dist/install.yaml).
const managerLabel = "app.kubernetes.io/name=keyward"

// VersionResult is what version reports (-o json|yaml).
type VersionResult struct {
	Client version.Info `json:"clientVersion"`
	// Manager is the manager's version as its Deployment's image tag says
	// (omitted with --client).
	Manager *ManagerVersion `json:"managerVersion,omitempty"`
}

// ManagerVersion is the manager Deployment found in the cluster.
type ManagerVersion struct {
	// Version is the image's tag (or digest); empty when it is unknown.
	Version    string `json:"version,omitempty"`
	Image      string `json:"image,omitempty"`
	Deployment string `json:"deployment,omitempty"`
	// Unknown says why the manager's version could not be found.
	Unknown string `json:"unknown,omitempty"`
}

func newVersionCommand(o *Options) *cobra.Command {
	var output string
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version [--client]",
		Short: "Print the plugin's version, and the manager's (from its Deployment's image tag)",
		Long: `Prints the plugin's version and revision and, unless --client is given, the
version of the Keyward manager in the cluster: the image tag of the Deployment
labelled ` + managerLabel + ` (needs list on deployments; make local runs the
manager outside the cluster, so there is none).`,
		Example: `  kubectl keyward version
  kubectl keyward version --client -o json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("version takes no arguments, got %q", strings.Join(args, " "))
			}
			return checkResultOutput(output)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			res := VersionResult{Client: version.Get()}
			if !clientOnly {
				res.Manager = o.managerVersion(cmd)
			}
			if output != "" {
				return printStructured(o.Out, output, res)
			}
			_, _ = fmt.Fprintf(o.Out, "Client Version: %s\n", res.Client)
			if m := res.Manager; m != nil {
				if m.Unknown != "" {
					_, _ = fmt.Fprintf(o.Out, "Manager Version: unknown (%s)\n", m.Unknown)
				} else {
					_, _ = fmt.Fprintf(o.Out, "Manager Version: %s (image %s, Deployment %s)\n", m.Version, m.Image, m.Deployment)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "print only the plugin's version, without asking the cluster")
	resultOutputFlag(cmd, &output)
	return cmd
}

// managerVersion finds the manager's Deployment in any namespace; what goes
// wrong is reported, not failed on: the client's version stands by itself.
func (o *Options) managerVersion(cmd *cobra.Command) *ManagerVersion {
	s, err := o.session(cmd)
	if err != nil {
		return &ManagerVersion{Unknown: oneLine(err.Error())}
	}
	sel, _ := parseSelector(managerLabel)
	var list appsv1.DeploymentList
	if err := s.c.List(s.ctx, &list, client.MatchingLabelsSelector{Selector: sel}); err != nil {
		if apierrors.IsForbidden(err) {
			return &ManagerVersion{Unknown: "you may not list deployments in all namespaces"}
		}
		return &ManagerVersion{Unknown: oneLine(err.Error())}
	}
	for _, d := range list.Items {
		for _, c := range d.Spec.Template.Spec.Containers {
			if c.Name == "manager" {
				return &ManagerVersion{Version: imageVersion(c.Image), Image: c.Image, Deployment: d.Namespace + "/" + d.Name}
			}
		}
	}
	return &ManagerVersion{Unknown: "no Deployment labelled " + managerLabel + " runs a manager container; make local runs the manager outside the cluster"}
}

// imageVersion is the tag (or digest) of an image reference.
func imageVersion(image string) string {
	if i := strings.LastIndex(image, "@"); i >= 0 {
		return image[i+1:]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		return image[i+1:]
	}
	return "latest"
}
