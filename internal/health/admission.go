package health

import (
	"context"
	"reflect"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The admission policies Keyward ships (config/admission/policies.yaml).
// Each is installed with a binding of the same name.
const (
	PolicyStampOwner     = "keyward-stamp-owner"
	PolicyAccessKeyRight = "keyward-accesskey-rights"
	PolicyDeleteOwnKeys  = "keyward-accesskey-delete"
	PolicyStampActor     = "keyward-stamp-actor"
)

// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingadmissionpolicies;validatingadmissionpolicybindings;mutatingadmissionpolicies;mutatingadmissionpolicybindings,verbs=get

// DefaultAdmissionCheckInterval is how often the policies are looked for.
const DefaultAdmissionCheckInterval = time.Minute

// AdmissionPolicies watches whether the shipped admission policies and their
// bindings are installed. Without them keys get no owner stamped, anyone who
// may update a key can revoke it or give it away, and anyone who may delete
// keys deletes any key — the manager cannot enforce that itself, but it says
// so: a log line at start and on every change, the metric
// keyward_admission_policies_installed, and a condition on every
// TenantSettings (through OnChange).
type AdmissionPolicies struct {
	// Reader reads from the API server (not the cache: the manager watches
	// no admission objects).
	Reader   client.Reader
	Log      logr.Logger
	Interval time.Duration
	// OnChange is called after the state changed (also after the first check).
	OnChange func(installed bool)

	mu      sync.RWMutex
	known   bool
	present bool
	missing []string
}

var admissionInstalled = prometheus.NewGauge(prometheus.GaugeOpts{
	Name: "keyward_admission_policies_installed",
	Help: "1 when Keyward's admission policies and bindings are installed, 0 when any is missing.",
})

// Collectors returns the checker's metrics.
func (a *AdmissionPolicies) Collectors() []prometheus.Collector {
	return []prometheus.Collector{admissionInstalled}
}

// Installed reports whether the policies were found, and whether that is
// known yet (false before the first check completed).
func (a *AdmissionPolicies) Installed() (installed, known bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.present, a.known
}

// Missing lists the policies or bindings not found by the last check.
func (a *AdmissionPolicies) Missing() []string {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return append([]string(nil), a.missing...)
}

// NeedLeaderElection: every replica reports for itself.
func (a *AdmissionPolicies) NeedLeaderElection() bool { return false }

// Start checks now and then every Interval until ctx ends.
func (a *AdmissionPolicies) Start(ctx context.Context) error {
	interval := a.Interval
	if interval <= 0 {
		interval = DefaultAdmissionCheckInterval
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		a.Check(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// Check looks for every policy and binding once and records the outcome.
// A failed read (other than not found) leaves the last state as it was.
func (a *AdmissionPolicies) Check(ctx context.Context) {
	wanted := []struct {
		name string
		obj  client.Object
	}{
		{PolicyStampOwner, &admissionv1.MutatingAdmissionPolicy{}},
		{PolicyStampOwner, &admissionv1.MutatingAdmissionPolicyBinding{}},
		{PolicyAccessKeyRight, &admissionv1.ValidatingAdmissionPolicy{}},
		{PolicyAccessKeyRight, &admissionv1.ValidatingAdmissionPolicyBinding{}},
		{PolicyDeleteOwnKeys, &admissionv1.ValidatingAdmissionPolicy{}},
		{PolicyDeleteOwnKeys, &admissionv1.ValidatingAdmissionPolicyBinding{}},
		{PolicyStampActor, &admissionv1.MutatingAdmissionPolicy{}},
		{PolicyStampActor, &admissionv1.MutatingAdmissionPolicyBinding{}},
	}
	var missing []string
	for _, w := range wanted {
		err := a.Reader.Get(ctx, client.ObjectKey{Name: w.name}, w.obj)
		switch {
		case apierrors.IsNotFound(err):
			missing = append(missing, reflect.TypeOf(w.obj).Elem().Name()+" "+w.name)
		case err != nil:
			a.Log.V(1).Info("cannot look for the admission policies; keeping the last answer", "error", err.Error())
			return
		}
	}
	a.record(missing)
}

func (a *AdmissionPolicies) record(missing []string) {
	present := len(missing) == 0
	a.mu.Lock()
	changed := !a.known || a.present != present
	a.known, a.present, a.missing = true, present, missing
	a.mu.Unlock()

	if present {
		admissionInstalled.Set(1)
	} else {
		admissionInstalled.Set(0)
	}
	if !changed {
		return
	}
	if present {
		a.Log.Info("Keyward's admission policies are installed: owners are stamped, revocation and giving keys away need their verbs, developers delete only their own keys")
	} else {
		a.Log.Error(nil, "Keyward's admission policies are missing: keys get no owner stamped, anyone who may update a key can revoke it or change its owner, and anyone who may delete keys deletes any key; apply config/admission",
			"missing", missing)
	}
	if a.OnChange != nil {
		a.OnChange(present)
	}
}
