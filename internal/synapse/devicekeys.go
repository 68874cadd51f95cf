package synapse

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// crossSigning is a user's current master and self-signing keys as Synapse
// stores them (e2e_cross_signing_keys.keydata), and their public keys,
// which stand in device_lists_outbound_pokes.device_id for a change of
// them.
type crossSigning struct {
	master, selfSigning       json.RawMessage
	masterPub, selfSigningPub string
}

// crossSigningKeys returns the current master and self-signing keys of
// users.
func (s *DeviceLists) crossSigningKeys(ctx context.Context, users []string) (map[string]crossSigning, error) {
	rows, err := s.d.DB.Query(ctx, `
		SELECT DISTINCT ON (user_id, keytype) user_id, keytype, keydata
		  FROM e2e_cross_signing_keys
		 WHERE user_id = ANY($1) AND keytype IN ('master', 'self_signing')
		 ORDER BY user_id, keytype, stream_id DESC`, users)
	if err != nil {
		return nil, fmt.Errorf("synapse: read e2e_cross_signing_keys: %w", err)
	}
	defer rows.Close()
	out := map[string]crossSigning{}
	for rows.Next() {
		var user, keytype, data string
		if err := rows.Scan(&user, &keytype, &data); err != nil {
			return nil, fmt.Errorf("synapse: read e2e_cross_signing_keys: %w", err)
		}
		pub, err := publicKey(data)
		if err != nil {
			s.d.Logger.Error("synapse: cross-signing key without a public key; its pokes are sent as devices",
				"user_id", user, "keytype", keytype, "error", err)
			continue
		}
		cs := out[user]
		if keytype == "master" {
			cs.master, cs.masterPub = json.RawMessage(data), pub
		} else {
			cs.selfSigning, cs.selfSigningPub = json.RawMessage(data), pub
		}
		out[user] = cs
	}
	return out, rows.Err()
}

// publicKey returns the public key of a cross-signing key: the version of
// its one key id ("ed25519:<public key>"), as Synapse's
// get_verify_key_from_cross_signing_key reads it.
func publicKey(keydata string) (string, error) {
	var k struct {
		Keys map[string]string `json:"keys"`
	}
	if err := json.Unmarshal([]byte(keydata), &k); err != nil {
		return "", err
	}
	if len(k.Keys) != 1 {
		return "", fmt.Errorf("%d keys, want 1", len(k.Keys))
	}
	for id := range k.Keys {
		if _, version, ok := strings.Cut(id, ":"); ok && version != "" {
			return version, nil
		}
		return "", fmt.Errorf("key id %q has no version", id)
	}
	return "", nil
}

// deviceInfo is what a device-list update says of a device that still
// exists: its keys (with every cross-signing signature of them) and name.
type deviceInfo struct {
	keys map[string]json.RawMessage
	name string
}

// devices returns the devices of pairs (user, device) that exist and are
// not hidden; a missing one was deleted.
func (s *DeviceLists) devices(ctx context.Context, pairs [][2]string) (map[[2]string]*deviceInfo, error) {
	out := map[[2]string]*deviceInfo{}
	if len(pairs) == 0 {
		return out, nil
	}
	users, ids := make([]string, len(pairs)), make([]string, len(pairs))
	for i, p := range pairs {
		users[i], ids[i] = p[0], p[1]
	}
	rows, err := s.d.DB.Query(ctx, `
		SELECT d.user_id, d.device_id, coalesce(d.display_name, ''), k.key_json
		  FROM unnest($1::text[], $2::text[]) AS q(user_id, device_id)
		  JOIN devices d USING (user_id, device_id)
		  LEFT JOIN e2e_device_keys_json k USING (user_id, device_id)
		 WHERE NOT d.hidden`, users, ids)
	if err != nil {
		return nil, fmt.Errorf("synapse: read devices: %w", err)
	}
	for rows.Next() {
		var user, device, name string
		var keyJSON *string
		if err := rows.Scan(&user, &device, &name, &keyJSON); err != nil {
			rows.Close()
			return nil, fmt.Errorf("synapse: read devices: %w", err)
		}
		info := &deviceInfo{name: name}
		if keyJSON != nil {
			if err := json.Unmarshal([]byte(*keyJSON), &info.keys); err != nil {
				s.d.Logger.Error("synapse: e2e_device_keys_json is not a JSON object; update sent without keys",
					"user_id", user, "device_id", device, "error", err)
				info.keys = nil
			}
		}
		out[[2]string{user, device}] = info
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("synapse: read devices: %w", err)
	}
	return out, s.addSignatures(ctx, users, ids, out)
}

// addSignatures merges the cross-signing signatures the devices' owners
// made of them into their keys' signatures, as Synapse's
// get_e2e_device_keys_and_signatures does (others' signatures stay out).
func (s *DeviceLists) addSignatures(ctx context.Context, users, ids []string, devices map[[2]string]*deviceInfo) error {
	rows, err := s.d.DB.Query(ctx, `
		SELECT s.target_user_id, s.target_device_id, s.user_id, s.key_id, s.signature
		  FROM unnest($1::text[], $2::text[]) AS q(target_user_id, target_device_id)
		  JOIN e2e_cross_signing_signatures s USING (target_user_id, target_device_id)
		 WHERE s.user_id = s.target_user_id`, users, ids)
	if err != nil {
		return fmt.Errorf("synapse: read e2e_cross_signing_signatures: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var user, device, signer, keyID, sig string
		if err := rows.Scan(&user, &device, &signer, &keyID, &sig); err != nil {
			return fmt.Errorf("synapse: read e2e_cross_signing_signatures: %w", err)
		}
		info := devices[[2]string{user, device}]
		if info == nil || info.keys == nil {
			continue
		}
		sigs := map[string]map[string]json.RawMessage{}
		if raw, ok := info.keys["signatures"]; ok {
			if err := json.Unmarshal(raw, &sigs); err != nil {
				s.d.Logger.Error("synapse: device keys with malformed signatures; cross-signing signature left out",
					"user_id", user, "device_id", device, "error", err)
				continue
			}
		}
		if sigs[signer] == nil {
			sigs[signer] = map[string]json.RawMessage{}
		}
		sigs[signer][keyID], _ = json.Marshal(sig)
		info.keys["signatures"], _ = json.Marshal(sigs)
	}
	return rows.Err()
}
