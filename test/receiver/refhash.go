package receiver

import "github.com/matrix-org/gomatrixserverlib"

// EventID is the event id of a PDU of room version version that does not
// carry one (room versions 3 and later): "$" and the unpadded URL-safe
// base64 of the SHA-256 of its redacted canonical form, as the receiving
// server computes it.
func EventID(version string, pdu []byte) (string, error) {
	v, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(version))
	if err != nil {
		return "", err
	}
	ev, err := v.NewEventFromTrustedJSON(pdu, false)
	if err != nil {
		return "", err
	}
	return ev.EventID(), nil
}

// referenceHash is EventID for the PDU checks.
func referenceHash(version string, pdu []byte) (string, bool) {
	id, err := EventID(version, pdu)
	return id, err == nil
}
