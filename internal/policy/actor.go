package policy

import (
	"strconv"
	"unicode"
	"unicode/utf8"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// actorAnnotations maps the Events that a user's change causes to the
// annotation in which the admission policy keyward-stamp-actor recorded
// that user.
var actorAnnotations = map[string]string{
	keyward.EventRevoked:     keyward.RevokedByAnnotation,
	keyward.EventDeactivated: keyward.StateChangedByAnnotation,
	keyward.EventReactivated: keyward.StateChangedByAnnotation,
	keyward.EventRotated:     keyward.RotationRequestedByAnnotation,
	keyward.EventImported:    keyward.ImportedByAnnotation,
}

// MaxUserName bounds a user name quoted in an Event note or by the plugin.
const MaxUserName = 256

// Actor returns the user who caused the Event reason on key, as stamped by
// the admission policy; "" when the Event has no actor (issue, expiry) or
// no stamp exists (the policy is not installed).
func Actor(key *keyward.AccessKey, reason string) string {
	a, ok := actorAnnotations[reason]
	if !ok {
		return ""
	}
	return key.Annotations[a]
}

// UserName renders a user name for a message: as it is when it is short
// and printable, otherwise quoted and cut, so that no name can forge a
// line or stretch a message (user names come from the authenticator and
// may hold anything).
func UserName(name string) string {
	cut := false
	if len(name) > MaxUserName {
		name, cut = name[:MaxUserName], true
		for !utf8.ValidString(name) {
			name = name[:len(name)-1]
		}
	}
	plain := name != ""
	for _, r := range name {
		if !unicode.IsPrint(r) || r == '"' || unicode.IsSpace(r) {
			plain = false
			break
		}
	}
	if !plain {
		name = strconv.Quote(name)
	}
	if cut {
		name += "..."
	}
	return name
}
