package cli

import (
	"errors"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// errNotInstalled replaces the API's "no matches for kind AccessKey" when
// the cluster has no Keyward CRDs.
var errNotInstalled = errors.New("this cluster has no Keyward: the API server does not serve accesskeys.keyward.dev/v1alpha1 " +
	"(Keyward is not installed, or --context names another cluster; to install it, see docs/operations.md#install)")

// notInstalled reports whether err says that the API server does not know
// Keyward's kinds.
func notInstalled(err error) bool {
	if meta.IsNoMatchError(err) {
		return true
	}
	var kind *meta.NoKindMatchError
	var resource *meta.NoResourceMatchError
	if errors.As(err, &kind) || errors.As(err, &resource) {
		return true
	}
	var discovery *discovery.ErrGroupDiscoveryFailed
	return errors.As(err, &discovery) && strings.Contains(err.Error(), keyward.GroupVersion.Group)
}

// explain turns an API error into one clear sentence. A refusal by an
// admission policy becomes the policy's own message, naming the policy.
func explain(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	const denied = "denied request: "
	if i := strings.Index(msg, denied); i >= 0 && (apierrors.IsForbidden(err) || apierrors.IsInvalid(err)) {
		text := strings.TrimSpace(msg[i+len(denied):])
		if p := policyName(msg[:i]); p != "" {
			text += " (refused by the admission policy " + p + ")"
		}
		return errors.New(text)
	}
	return err
}

// policyName finds the policy in "ValidatingAdmissionPolicy 'name' with binding ...".
func policyName(s string) string {
	for _, kind := range []string{"ValidatingAdmissionPolicy '", "MutatingAdmissionPolicy '"} {
		if i := strings.Index(s, kind); i >= 0 {
			rest := s[i+len(kind):]
			if j := strings.IndexByte(rest, '\''); j >= 0 {
				return rest[:j]
			}
		}
	}
	return ""
}

// getKey reads one AccessKey, with a clear error when there is none or the
// user may not read it.
func (s *session) getKey(name string) (*keyward.AccessKey, error) {
	var k keyward.AccessKey
	if err := s.c.Get(s.ctx, client.ObjectKey{Namespace: s.ns, Name: name}, &k); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("accesskey %q not found in namespace %q", name, s.ns)
		}
		return nil, explain(err)
	}
	return &k, nil
}

// ref names a key in messages: namespace/name.
func ref(k *keyward.AccessKey) string { return k.Namespace + "/" + k.Name }

// notIssued is the error for commands that need key material.
func notIssued(k *keyward.AccessKey, what string) error {
	reason, _ := ready(k)
	phase := string(k.Status.Phase)
	if phase == "" {
		phase = "not yet reconciled"
	}
	if reason != "" {
		phase += ", reason " + reason
	}
	return fmt.Errorf("accesskey %s has no key issued yet (phase %s): %s", ref(k), phase, what)
}

func revokedErr(k *keyward.AccessKey, what string) error {
	return fmt.Errorf("accesskey %s is revoked and its key material destroyed: %s", ref(k), what)
}
