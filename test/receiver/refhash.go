package receiver

import "github.com/matrix-org/gomatrixserverlib"

// referenceHash is the event id of a PDU of room version version that does
// not carry one (room versions 3 and later): "$" and the unpadded URL-safe
// base64 of the SHA-256 of its redacted canonical form.
func referenceHash(version string, pdu []byte) (string, bool) {
	v, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(version))
	if err != nil {
		return "", false
	}
	ev, err := v.NewEventFromTrustedJSON(pdu, false)
	if err != nil {
		return "", false
	}
	return ev.EventID(), true
}
