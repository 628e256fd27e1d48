package token

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Names of the signing-key Secret, defined once.
const (
	// SigningSecretType is the type of the Secret holding the token signing keys.
	SigningSecretType corev1.SecretType = "keyward.dev/token-signing-keys"
	// SigningSecretKey is the data key of the Secret: a JSON SigningKeySet.
	SigningSecretKey = "signing-keys.json"
	// SigningAlgorithm is the signature algorithm of access tokens.
	SigningAlgorithm = jose.ES256
	// The signing Secret is labelled part-of, not managed-by: the
	// controllers (and their cache) treat every Secret managed-by keyward as
	// an AccessKey's Secret.
	labelPartOf    = "app.kubernetes.io/part-of"
	labelComponent = "app.kubernetes.io/component"
)

// SigningKey is one signing key as stored in the Secret. Key is the private
// JWK (with "d"): it is only ever in the Secret and in memory.
type SigningKey struct {
	KID string `json:"kid"`
	// PublishedAt is when the key was added (and so published in the JWKS).
	PublishedAt time.Time `json:"publishedAt"`
	// SignFrom is when it starts signing (at least one token lifetime after
	// PublishedAt for every key but the first).
	SignFrom time.Time       `json:"signFrom"`
	Key      json.RawMessage `json:"jwk"`
}

// SigningKeySet is the Secret's SigningSecretKey.
type SigningKeySet struct {
	Keys []SigningKey `json:"keys"`
}

// Schedule is the signing-key rotation timeline's parameters.
type Schedule struct {
	// Rotation is how long a key signs before the next one takes over.
	Rotation time.Duration
	// TTL is the longest token lifetime.
	TTL time.Duration
	// Margin is added to every overlap: the time for all replicas to read a
	// new key (the Secret's refresh interval), for caches of the JWKS to
	// expire (its max-age) and for clock skew.
	Margin time.Duration
}

// KeyTimes is what the timeline needs of a key.
type KeyTimes struct {
	KID         string
	PublishedAt time.Time
	SignFrom    time.Time
}

// Timeline is the state of the signing keys at one instant: a pure
// function of the keys' times, the schedule and now.
type Timeline struct {
	// Signer is the KID that signs now ("" with no key).
	Signer string
	// Published are the KIDs in the JWKS, in SignFrom order: every key that
	// has not started signing yet, the signer, and every earlier key until
	// TTL+Margin after its successor started signing (then every token it
	// signed has expired).
	Published []string
	// Retired are KIDs no longer needed: they are dropped from the Secret.
	Retired []string
	// NeedNew is set when the next key must be added now, to sign from
	// NextSignFrom: a key is added TTL+Margin before it is due, so it is in
	// every JWKS at least one token lifetime before it signs.
	NeedNew      bool
	NextSignFrom time.Time
}

// Timeline computes the timeline of keys at now. Keys are taken in SignFrom
// order; the signer is the last key whose SignFrom has come (or the first
// key, when none has: a freshly created set signs at once).
func (s Schedule) Timeline(keys []KeyTimes, now time.Time) Timeline {
	var t Timeline
	if len(keys) == 0 {
		return Timeline{NeedNew: true, NextSignFrom: now}
	}
	ks := append([]KeyTimes(nil), keys...)
	sort.SliceStable(ks, func(i, j int) bool { return ks[i].SignFrom.Before(ks[j].SignFrom) })
	signer := 0
	for i, k := range ks {
		if !k.SignFrom.After(now) {
			signer = i
		}
	}
	t.Signer = ks[signer].KID
	overlap := s.TTL + s.Margin
	for i, k := range ks {
		if i < signer && !now.Before(ks[i+1].SignFrom.Add(overlap)) {
			t.Retired = append(t.Retired, k.KID)
			continue
		}
		t.Published = append(t.Published, k.KID)
	}
	if signer == len(ks)-1 {
		due := ks[signer].SignFrom.Add(s.Rotation)
		if !now.Before(due.Add(-overlap)) {
			t.NeedNew = true
			t.NextSignFrom = due
			if earliest := now.Add(overlap); due.Before(earliest) {
				t.NextSignFrom = earliest
			}
		}
	}
	return t
}

// signingKey is a parsed SigningKey.
type signingKey struct {
	SigningKey
	public jose.JSONWebKey
	signer jose.Signer
}

// keyState is what a KeyRing holds at one time; replaced as a whole.
type keyState struct {
	keys []*signingKey
	byID map[string]*signingKey
}

func (st *keyState) times() []KeyTimes {
	out := make([]KeyTimes, len(st.keys))
	for i, k := range st.keys {
		out[i] = KeyTimes{KID: k.KID, PublishedAt: k.PublishedAt, SignFrom: k.SignFrom}
	}
	return out
}

// KeyRing keeps the token signing keys: it reads them from the Secret
// (creating it on first start), adds the next key and drops retired ones
// on schedule, and re-reads the Secret every Refresh, so every replica signs
// with the same key and publishes the same JWKS. It runs on every replica;
// concurrent writers are serialised by the Secret's resourceVersion.
type KeyRing struct {
	Namespace, Name string
	Schedule        Schedule
	Refresh         time.Duration
	// Reader reads the Secret from the API server (the manager's cache
	// holds only the Secrets of AccessKeys); Writer creates and updates it.
	Reader client.Reader
	Writer client.Writer
	Log    logr.Logger
	Now    func() time.Time

	state atomic.Pointer[keyState]
}

// NeedLeaderElection is false: every replica signs.
func (r *KeyRing) NeedLeaderElection() bool { return false }

// Ready reports whether keys have been loaded.
func (r *KeyRing) Ready() bool { return r.state.Load() != nil }

func (r *KeyRing) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Start syncs the keys at once and then every Refresh until ctx ends. A
// failing sync (no RBAC, no namespace yet) is logged and retried; token
// endpoints answer 503 until the first success.
func (r *KeyRing) Start(ctx context.Context) error {
	refresh := r.Refresh
	if refresh <= 0 {
		refresh = DefaultSigningRefresh
	}
	wait := 100 * time.Millisecond
	for {
		err := r.Sync(ctx)
		next := refresh
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			r.Log.Error(err, "syncing the token signing keys", "secret", r.Namespace+"/"+r.Name)
			next = min(wait, refresh)
			wait = min(2*wait, 30*time.Second)
		} else {
			wait = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(next):
		}
	}
}

// Sync reads the Secret, creates it or adds and drops keys as the schedule
// says, and loads the result.
func (r *KeyRing) Sync(ctx context.Context) error {
	for attempt := 0; attempt < 5; attempt++ {
		var sec corev1.Secret
		err := r.Reader.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: r.Name}, &sec)
		if apierrors.IsNotFound(err) {
			err = r.create(ctx)
			if apierrors.IsAlreadyExists(err) {
				continue // another replica was first: read its keys
			}
			if err != nil {
				return fmt.Errorf("creating the token signing Secret: %w", err)
			}
			continue
		}
		if err != nil {
			return err
		}
		set, err := decodeSet(&sec)
		if err != nil {
			return err
		}
		st, err := parseKeys(set)
		if err != nil {
			return err
		}
		now := r.now()
		tl := r.Schedule.Timeline(st.times(), now)
		if !tl.NeedNew && len(tl.Retired) == 0 {
			r.state.Store(st)
			return nil
		}
		next, err := r.advance(set, tl, now)
		if err != nil {
			return err
		}
		if err := encodeSet(&sec, next); err != nil {
			return err
		}
		err = r.Writer.Update(ctx, &sec)
		if apierrors.IsConflict(err) {
			continue // another replica rotated: read its keys
		}
		if err != nil {
			return fmt.Errorf("rotating the token signing keys: %w", err)
		}
		if tl.NeedNew {
			r.Log.Info("added a token signing key", "kid", next.Keys[len(next.Keys)-1].KID, "signFrom", tl.NextSignFrom)
		}
		if len(tl.Retired) > 0 {
			r.Log.Info("dropped retired token signing keys", "kids", tl.Retired)
		}
	}
	return errors.New("the token signing Secret kept changing under us")
}

// advance moves set along the timeline: retired keys out, a new key in
// when due.
func (r *KeyRing) advance(set SigningKeySet, tl Timeline, now time.Time) (SigningKeySet, error) {
	retired := map[string]bool{}
	for _, k := range tl.Retired {
		retired[k] = true
	}
	var out SigningKeySet
	for _, k := range set.Keys {
		if !retired[k.KID] {
			out.Keys = append(out.Keys, k)
		}
	}
	if tl.NeedNew {
		k, err := NewSigningKey(now, tl.NextSignFrom)
		if err != nil {
			return out, err
		}
		out.Keys = append(out.Keys, k)
	}
	return out, nil
}

func (r *KeyRing) create(ctx context.Context) error {
	now := r.now()
	k, err := NewSigningKey(now, now)
	if err != nil {
		return err
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: r.Name, Labels: map[string]string{
			labelPartOf: "keyward", labelComponent: "token-signing-keys"}},
		Type: SigningSecretType,
	}
	if err := encodeSet(sec, SigningKeySet{Keys: []SigningKey{k}}); err != nil {
		return err
	}
	if err := r.Writer.Create(ctx, sec); err != nil {
		return err
	}
	r.Log.Info("created the token signing Secret", "secret", r.Namespace+"/"+r.Name, "kid", k.KID)
	return nil
}

// current returns the state and the timeline at now; nil before the first sync.
func (r *KeyRing) current(now time.Time) (*keyState, Timeline) {
	st := r.state.Load()
	if st == nil {
		return nil, Timeline{}
	}
	return st, r.Schedule.Timeline(st.times(), now)
}

// signer is the key that signs at now; nil before the first sync.
func (r *KeyRing) signer(now time.Time) *signingKey {
	st, tl := r.current(now)
	if st == nil {
		return nil
	}
	return st.byID[tl.Signer]
}

// publicKey returns the public key of a published key; nil for a key not
// published at now.
func (r *KeyRing) publicKey(kid string, now time.Time) *jose.JSONWebKey {
	st, tl := r.current(now)
	if st == nil {
		return nil
	}
	for _, id := range tl.Published {
		if id == kid {
			return &st.byID[id].public
		}
	}
	return nil
}

// JWKS is the public key set published at now; ok is false before the first sync.
func (r *KeyRing) JWKS(now time.Time) (jose.JSONWebKeySet, bool) {
	st, tl := r.current(now)
	if st == nil {
		return jose.JSONWebKeySet{}, false
	}
	set := jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, 0, len(tl.Published))}
	for _, id := range tl.Published {
		set.Keys = append(set.Keys, st.byID[id].public)
	}
	return set, true
}

// NewSigningKey generates a P-256 key publishedAt, to sign from signFrom.
// Its KID is derived from the public key (RFC 7638 thumbprint).
func NewSigningKey(publishedAt, signFrom time.Time) (SigningKey, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return SigningKey{}, err
	}
	jwk := jose.JSONWebKey{Key: priv, Algorithm: string(SigningAlgorithm), Use: "sig"}
	pub := jwk.Public()
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return SigningKey{}, err
	}
	jwk.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	raw, err := jwk.MarshalJSON()
	if err != nil {
		return SigningKey{}, err
	}
	return SigningKey{KID: jwk.KeyID, PublishedAt: publishedAt.UTC().Truncate(time.Second),
		SignFrom: ceilSecond(signFrom.UTC()), Key: raw}, nil
}

// ceilSecond rounds up to a whole second, so that a key never signs
// earlier than the schedule says.
func ceilSecond(t time.Time) time.Time {
	if r := t.Truncate(time.Second); r.Before(t) {
		return r.Add(time.Second)
	}
	return t
}

func decodeSet(sec *corev1.Secret) (SigningKeySet, error) {
	var set SigningKeySet
	raw, ok := sec.Data[SigningSecretKey]
	if !ok {
		return set, fmt.Errorf("the token signing Secret %s/%s has no %s", sec.Namespace, sec.Name, SigningSecretKey)
	}
	if err := json.Unmarshal(raw, &set); err != nil {
		// Never quote the content: it holds private keys.
		return set, fmt.Errorf("the token signing Secret %s/%s: %s is not a key set", sec.Namespace, sec.Name, SigningSecretKey)
	}
	return set, nil
}

func encodeSet(sec *corev1.Secret, set SigningKeySet) error {
	raw, err := json.Marshal(set)
	if err != nil {
		return err
	}
	if sec.Data == nil {
		sec.Data = map[string][]byte{}
	}
	sec.Data[SigningSecretKey] = raw
	return nil
}

func parseKeys(set SigningKeySet) (*keyState, error) {
	st := &keyState{byID: map[string]*signingKey{}}
	for _, k := range set.Keys {
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(k.Key); err != nil {
			return nil, fmt.Errorf("token signing key %s cannot be read", k.KID)
		}
		priv, ok := jwk.Key.(*ecdsa.PrivateKey)
		if !ok || jwk.KeyID != k.KID {
			return nil, fmt.Errorf("token signing key %s is not a P-256 private key with its kid", k.KID)
		}
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: SigningAlgorithm, Key: jose.JSONWebKey{Key: priv, KeyID: k.KID}},
			(&jose.SignerOptions{}).WithType("JWT"))
		if err != nil {
			return nil, fmt.Errorf("token signing key %s: no signer", k.KID)
		}
		sk := &signingKey{SigningKey: k, public: jwk.Public(), signer: signer}
		st.keys = append(st.keys, sk)
		st.byID[k.KID] = sk
	}
	if len(st.keys) == 0 {
		return nil, errors.New("the token signing Secret holds no key")
	}
	return st, nil
}
