package health

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

func TestWatchMonitorFailsAfterRepeatedFailuresAndRecovers(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	m := NewWatchMonitor(logr.Discard())
	m.Now = func() time.Time { return now }
	boom := errors.New("decoding failed")

	if err := m.Check(nil); err != nil {
		t.Fatalf("a monitor that saw nothing is healthy: %v", err)
	}
	m.Record("*v1alpha1.AccessKey", boom)
	m.Record("*v1alpha1.AccessKey", boom)
	if err := m.Check(nil); err != nil {
		t.Fatalf("two failures are a passing hiccup: %v", err)
	}
	now = now.Add(10 * time.Second)
	m.Record("*v1alpha1.AccessKey", boom)
	if err := m.Check(nil); err == nil {
		t.Fatal("three failures in a row must fail readiness")
	}
	if got := m.Failing(); len(got) != 1 || got[0] != "*v1alpha1.AccessKey" {
		t.Fatalf("failing = %v", got)
	}
	now = now.Add(m.Window - time.Second)
	if err := m.Check(nil); err == nil {
		t.Fatal("still failing within the window")
	}
	now = now.Add(2 * time.Second)
	if err := m.Check(nil); err != nil {
		t.Fatalf("a watch quiet for the whole window has recovered: %v", err)
	}
}

func TestWatchMonitorForgetsOldFailures(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	m := NewWatchMonitor(logr.Discard())
	m.Now = func() time.Time { return now }
	for range 3 {
		m.Record("*v1.Secret", errors.New("connection refused"))
		now = now.Add(m.Window + time.Second) // each failure long after the last: a new run each time
	}
	if err := m.Check(nil); err != nil {
		t.Fatalf("failures far apart are not a failing watch: %v", err)
	}
}

func TestAdmissionPoliciesReportsMissingOnes(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	all := []client.Object{
		&admissionv1.MutatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: PolicyStampOwner}},
		&admissionv1.MutatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: PolicyStampOwner}},
		&admissionv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: PolicyAccessKeyRight}},
		&admissionv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: PolicyAccessKeyRight}},
		&admissionv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: PolicyDeleteOwnKeys}},
		&admissionv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: PolicyDeleteOwnKeys}},
	}
	for drop := -1; drop < len(all); drop++ {
		var present []client.Object
		for i, o := range all {
			if i != drop {
				present = append(present, o.DeepCopyObject().(client.Object))
			}
		}
		var changes []bool
		a := &AdmissionPolicies{Reader: fake.NewClientBuilder().WithScheme(scheme).WithObjects(present...).Build(), Log: logr.Discard(),
			OnChange: func(installed bool) { changes = append(changes, installed) }}
		if _, known := a.Installed(); known {
			t.Fatal("nothing is known before the first check")
		}
		a.Check(context.Background())
		installed, known := a.Installed()
		if !known || installed != (drop < 0) {
			t.Fatalf("dropping %d: installed=%v known=%v missing=%v", drop, installed, known, a.Missing())
		}
		if drop >= 0 && len(a.Missing()) != 1 {
			t.Fatalf("dropping %d: missing = %v", drop, a.Missing())
		}
		a.Check(context.Background())
		if len(changes) != 1 || changes[0] != (drop < 0) {
			t.Fatalf("dropping %d: OnChange calls %v, want one", drop, changes)
		}
	}
}
