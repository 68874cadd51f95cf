package edu

// Kind is how fedsender treats an EDU type.
type Kind int

// The kinds, in fill order.
const (
	Presence Kind = iota
	Receipt
	ToDevice
	DeviceList // device-list updates and signing-key updates
	Other      // any other type: droppable, coalesced only on an explicit key
	Typing
	numKinds
)

// EDU types fedsender knows.
const (
	TypePresence         = "m.presence"
	TypeReceipt          = "m.receipt"
	TypeTyping           = "m.typing"
	TypeToDevice         = "m.direct_to_device"
	TypeDeviceList       = "m.device_list_update"
	TypeSigningKey       = "m.signing_key_update"
	TypeSigningKeyLegacy = "org.matrix.signing_key_update"
)

// KindOf returns how an EDU type is treated.
func KindOf(eduType string) Kind {
	switch eduType {
	case TypePresence:
		return Presence
	case TypeReceipt:
		return Receipt
	case TypeTyping:
		return Typing
	case TypeToDevice:
		return ToDevice
	case TypeDeviceList, TypeSigningKey, TypeSigningKeyLegacy:
		return DeviceList
	}
	return Other
}

// MustDeliver reports whether EDUs of the kind are persisted until
// acknowledged.
func (k Kind) MustDeliver() bool { return k == ToDevice || k == DeviceList }
