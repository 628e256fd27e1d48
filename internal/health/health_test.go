package health

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
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

// listErr wraps err as client-go's reflector reports a failed list.
func listErr(err error) error {
	return fmt.Errorf("failed to list *v1alpha1.AccessKey: %w", err)
}

// dialErr is what net/http returns when nothing listens at the API server's address.
func dialErr(errno syscall.Errno) error {
	return &url.Error{Op: "Get", URL: "https://127.0.0.1:6443/apis/keyward.dev/v1alpha1/accesskeys",
		Err: &net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: errno}}}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "net/http: TLS handshake timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestUnreachableTellsAnOutageFromAnAnswer(t *testing.T) {
	gr := schema.GroupResource{Group: "keyward.dev", Resource: "accesskeys"}
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", dialErr(syscall.ECONNREFUSED), true},
		{"connection reset", dialErr(syscall.ECONNRESET), true},
		{"no route to host", dialErr(syscall.EHOSTUNREACH), true},
		{"TLS handshake timeout", &url.Error{Op: "Get", URL: "https://api", Err: timeoutErr{}}, true},
		{"http2 connection lost", errors.New("Get \"https://api\": http2: client connection lost"), true},
		{"unexpected EOF", &url.Error{Op: "Get", URL: "https://api", Err: io.ErrUnexpectedEOF}, true},
		{"context deadline", context.DeadlineExceeded, true},
		{"DNS", &url.Error{Op: "Get", URL: "https://api", Err: &net.DNSError{Err: "no such host", Name: "api"}}, true},
		{"429", apierrors.NewTooManyRequests("slow down", 1), true},
		{"503", apierrors.NewServiceUnavailable("starting"), true},
		{"504", apierrors.NewTimeoutError("etcd", 1), true},
		{"server timeout", apierrors.NewServerTimeout(gr, "list", 1), true},

		{"forbidden", apierrors.NewForbidden(gr, "", errors.New("RBAC")), false},
		{"unauthorized", apierrors.NewUnauthorized("token expired"), false},
		{"CRD gone", apierrors.NewNotFound(gr, ""), false},
		{"internal error", apierrors.NewInternalError(errors.New("boom")), false},
		{"undecodable object", errors.New("unable to understand list result: json: cannot unmarshal string into Go struct field"), false},
		{"another failure of the round trip", &url.Error{Op: "Get", URL: "https://api", Err: errors.New("http2: client connection force closed via ClientConn.Close")}, true},

		{"certificate", &url.Error{Op: "Get", URL: "https://api", Err: x509.UnknownAuthorityError{}}, false},
		{"certificate, as the TLS handshake reports it", &url.Error{Op: "Get", URL: "https://api", Err: &tls.CertificateVerificationError{Err: x509.HostnameError{}}}, false},
		{"our client certificate refused", &url.Error{Op: "Get", URL: "https://api", Err: &net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}}, false},
		{"a TLS alert", &url.Error{Op: "Get", URL: "https://api", Err: fmt.Errorf("handshake: %w", tls.AlertError(40))}, false},
		{"a bare string that only names a cause", errors.New("connection refused"), false},
	} {
		if got := Unreachable(listErr(c.err)); got != c.want {
			t.Errorf("%s: Unreachable = %v, want %v", c.name, got, c.want)
		}
	}
	if Unreachable(nil) {
		t.Error("nil is no failure")
	}
}

func TestWatchMonitorRidesOutAnUnreachableAPIServerForTheGrace(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	m := NewWatchMonitor(logr.Discard())
	m.Now = func() time.Time { return now }
	const res = "*v1alpha1.AccessKey"
	refused := listErr(dialErr(syscall.ECONNREFUSED))
	if m.UnreachableGrace < 2*time.Minute {
		t.Fatalf("the default grace (%v) must ride out an API server restart or a minute-long outage", m.UnreachableGrace)
	}

	start := now
	// The reflector retries with a backoff of at most 30 s: many failures,
	// each within the window of the last.
	for now.Sub(start) < m.UnreachableGrace-30*time.Second {
		m.Record(res, refused)
		if err := m.Check(nil); err != nil {
			t.Fatalf("%v into an outage (grace %v): %v", now.Sub(start), m.UnreachableGrace, err)
		}
		now = now.Add(30 * time.Second)
	}
	if got := m.Unreachable(); len(got) != 1 || got[0] != res {
		t.Fatalf("Unreachable() = %v during the outage", got)
	}
	if len(m.Failing()) != 0 {
		t.Fatal("not failing within the grace")
	}
	// A genuine failure in between still counts for itself, from zero.
	m.Record(res, apierrors.NewForbidden(schema.GroupResource{Resource: "accesskeys"}, "", errors.New("RBAC")))
	if err := m.Check(nil); err != nil {
		t.Fatalf("one Forbidden is a hiccup: %v", err)
	}
	now = start.Add(m.UnreachableGrace)
	m.Record(res, refused)
	if err := m.Check(nil); err == nil {
		t.Fatalf("unreachable for the whole grace (%v) must fail readiness", m.UnreachableGrace)
	}
	// The API server is back: quiet for the window, recovered.
	now = now.Add(m.Window + time.Second)
	if err := m.Check(nil); err != nil {
		t.Fatalf("recovered after a quiet window: %v", err)
	}
	if got := m.Unreachable(); len(got) != 0 {
		t.Fatalf("Unreachable() = %v after recovery", got)
	}
}

func TestWatchMonitorCountsGenuineFailuresDuringAnOutage(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	m := NewWatchMonitor(logr.Discard())
	m.Now = func() time.Time { return now }
	forbidden := listErr(apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "", errors.New("RBAC")))
	for range 2 {
		m.Record("*v1.Secret", listErr(dialErr(syscall.ECONNREFUSED)))
		m.Record("*v1.Secret", forbidden)
		now = now.Add(5 * time.Second)
	}
	if err := m.Check(nil); err != nil {
		t.Fatalf("two Forbidden and two unreachable: not yet failing: %v", err)
	}
	m.Record("*v1.Secret", forbidden)
	if err := m.Check(nil); err == nil {
		t.Fatal("three Forbidden answers fail readiness, whatever else happened meanwhile")
	}
}

func TestWatchMonitorWithoutGraceCountsUnreachableLikeAnyFailure(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	m := NewWatchMonitor(logr.Discard())
	m.Now = func() time.Time { return now }
	m.UnreachableGrace = 0
	for range 3 {
		m.Record("*v1alpha1.Application", listErr(dialErr(syscall.ECONNREFUSED)))
		now = now.Add(time.Second)
	}
	if err := m.Check(nil); err == nil {
		t.Fatal("with no grace, three unreachable failures fail readiness")
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
		&admissionv1.MutatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: PolicyStampActor}},
		&admissionv1.MutatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: PolicyStampActor}},
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
