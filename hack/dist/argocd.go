package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// argocdCM writes the argocd-cm snippet that installs the health checks and
// the rotate action under dir (config/argocd), in Argo CD's key format:
// resource.customizations.health.<group>_<Kind> and
// resource.customizations.actions.<group>_<Kind>.
func argocdCM(dir string) error {
	base := filepath.Join(dir, "resource_customizations", "keyward.dev")
	var b bytes.Buffer
	fmt.Fprintf(&b, generatedHeader, "argocd-cm", base)
	b.WriteString(`# Merge data: into the argocd-cm ConfigMap of your Argo CD
# (kubectl -n argocd patch configmap argocd-cm --patch-file config/argocd/argocd-cm.yaml),
# or add the keys to configs.cm of the argo-cd Helm chart.
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
  labels:
    app.kubernetes.io/name: argocd-cm
    app.kubernetes.io/part-of: argocd
data:
`)
	indent := func(s, pad string) string {
		var out []string
		for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
			if l == "" {
				out = append(out, "")
			} else {
				out = append(out, pad+l)
			}
		}
		return strings.Join(out, "\n") + "\n"
	}
	for _, kind := range []string{"AccessKey", "Application", "TenantSettings"} {
		health, err := os.ReadFile(filepath.Join(base, kind, "health.lua"))
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "  resource.customizations.health.keyward.dev_%s: |\n%s", kind, indent(string(health), "    "))
	}
	discovery, err := os.ReadFile(filepath.Join(base, "AccessKey", "actions", "discovery.lua"))
	if err != nil {
		return err
	}
	rotate, err := os.ReadFile(filepath.Join(base, "AccessKey", "actions", "rotate", "action.lua"))
	if err != nil {
		return err
	}
	b.WriteString("  resource.customizations.actions.keyward.dev_AccessKey: |\n")
	b.WriteString("    discovery.lua: |\n" + indent(string(discovery), "      "))
	b.WriteString("    definitions:\n      - name: rotate\n        action.lua: |\n" + indent(string(rotate), "          "))
	return os.WriteFile(filepath.Join(dir, "argocd-cm.yaml"), b.Bytes(), 0o644)
}
