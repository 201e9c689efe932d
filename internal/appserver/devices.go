package appserver

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/push-appserver/push-appserver/internal/registry"
)

// noSecret, as a registration's Secret handed to register, asks for a
// registration without one (Tigase's register-device).
const noSecret = "\x00none"

func (a Account) check() error {
	if a.Bare == "" || len(a.Bare) > 3071 {
		return fmt.Errorf("%w: the account is required", ErrBadRequest)
	}
	return nil
}

// RegisterDevice registers a device identified by account and device id, as
// Conversations' register-push-* commands do: the node and secret are ours
// to choose, and the same account and device get the same node again. A
// non-empty channel (a group chat's bare JID, p2's optional muc field)
// gives that channel its own node and secret on the same device. The
// account's domain, a salted hash of account, device and channel, and
// the fingerprints p2 sends back in every push (p2Fingerprints) are
// kept.
func (s *Service) RegisterDevice(ctx context.Context, typ string, account Account, deviceID, channel, token string) (registry.Registration, error) {
	if err := account.check(); err != nil {
		return s.registered(registry.Registration{}, err)
	}
	if err := checkText("device id", deviceID, MaxNodeLen); err != nil {
		return s.registered(registry.Registration{}, err)
	}
	if len(channel) > 3071 {
		return s.registered(registry.Registration{}, fmt.Errorf("%w: channel longer than 3071 bytes", ErrBadRequest))
	}
	parts := []string{account.Bare, deviceID}
	if channel != "" {
		// Without a channel the key is what it always was, so devices
		// registered before channels existed keep their node.
		parts = append(parts, "channel", channel)
	}
	r := registry.Registration{Domain: account.Domain, Account: p2Fingerprints(account.Bare, deviceID, channel)}
	return s.registered(s.registerKeyed(ctx, typ, token, account, parts, r, "", 16))
}

// p2Fingerprints is what p2, Conversations' app server, sends back in
// every push: data.account, sha1 in hex of the bare JID, a zero byte and
// the device id, and for a channel data.channel, the same of the
// channel's JID; Conversations wakes the account whose fingerprint it is
// (and rejoins the channel), and drops a push without one. Kept as the
// registration's Account: the two apart by a space, which no JID holds.
func p2Fingerprints(bare, deviceID, channel string) string {
	fp := func(jid string) string {
		sum := sha1.Sum([]byte(jid + "\x00" + deviceID))
		return hex.EncodeToString(sum[:])
	}
	if channel == "" {
		return fp(bare)
	}
	return fp(bare) + " " + fp(channel)
}

// UnregisterDevice removes what RegisterDevice registered for the same
// account, device id and channel.
func (s *Service) UnregisterDevice(ctx context.Context, typ string, account Account, deviceID, channel string) (registry.Registration, error) {
	if err := account.check(); err != nil {
		return registry.Registration{}, err
	}
	if deviceID == "" {
		return registry.Registration{}, fmt.Errorf("%w: the device id is required", ErrBadRequest)
	}
	parts := []string{account.Bare, deviceID}
	if channel != "" {
		parts = append(parts, "channel", channel)
	}
	return s.unregisterKeyed(ctx, typ, account, parts)
}

// RegisterTigase registers a device the way Tigase's push component does
// for its register-device command: by account and device token, with a
// node of ours and no secret, because Siskin enables push with the node
// alone. The node is 32 random bytes so that it cannot be guessed, after
// tigaseNodePrefix. The
// account's bare JID is kept, because the push must carry it: Siskin's
// notification extension picks the key that decrypts an encrypted push by
// it.
func (s *Service) RegisterTigase(ctx context.Context, typ string, account Account, token string) (registry.Registration, error) {
	if err := account.check(); err != nil {
		return s.registered(registry.Registration{}, err)
	}
	r := registry.Registration{Domain: account.Domain, Account: account.Bare, Secret: noSecret}
	return s.registered(s.registerKeyed(ctx, typ, token, account, []string{"tigase", account.Bare, token}, r, tigaseNodePrefix, 32))
}

// UnregisterTigase removes what RegisterTigase registered for the same
// account and token.
func (s *Service) UnregisterTigase(ctx context.Context, typ string, account Account, token string) (registry.Registration, error) {
	if err := account.check(); err != nil {
		return registry.Registration{}, err
	}
	if token == "" {
		return registry.Registration{}, fmt.Errorf("%w: the device token is required", ErrBadRequest)
	}
	return s.unregisterKeyed(ctx, typ, account, []string{"tigase", account.Bare, token})
}

// tigaseTarget says whether t is a registration RegisterTigase made:
// the only kind stored without a secret (noSecret), and with the bare
// JID its pushes name.
func tigaseTarget(t registry.PushTarget) bool { return t.Secret == "" && t.Account != "" }

// tigaseNodePrefix begins the nodes of Tigase registrations. 64 hex
// digits alone are an APNS device token's shape: on a component that also
// takes tokenless publishes, a publish to a Tigase node removed since
// (unregister-device, a dead token) would go to APNS with the node as its
// token, where the prefix makes it no token at all (ErrNotFound).
const tigaseNodePrefix = "tigase-"

// registerKeyed registers r (its Domain, Account and Secret as given) under
// the device key hashed from parts, keeping the node of an earlier
// registration with the same key and type, or choosing a random node of
// nodeBytes bytes after prefix.
func (s *Service) registerKeyed(ctx context.Context, typ, token string, account Account, parts []string, r registry.Registration, prefix string, nodeBytes int) (registry.Registration, error) {
	if err := s.checkRegistration(typ, "-", token); err != nil {
		return registry.Registration{}, err
	}
	if err := s.admitAccount(account); err != nil {
		return registry.Registration{}, err
	}
	key, err := s.salted(ctx, "device", parts...)
	if err != nil {
		return registry.Registration{}, err
	}
	owner, err := s.owner(ctx, account)
	if err != nil {
		return registry.Registration{}, err
	}
	caller := Caller{Account: account}
	tmpl := r
	tmpl.Type, tmpl.Token, tmpl.DeviceKey = typ, token, key
	// Registrations of one device race (a client retrying, several
	// connections of one account): the store refuses a second node for
	// the device, and the loser looks again and renews the winner's node,
	// so every node and secret we answer works.
	for attempt := 0; ; attempt++ {
		r := tmpl
		moved := false
		switch old, err := s.store.GetByDeviceKey(ctx, key); {
		case err == nil && old.Type == typ:
			r.Node = old.Node
		case err == nil || errors.Is(err, registry.ErrNotFound):
			if err == nil {
				// Same device moved to another app: start afresh, but
				// not when the new registration will be refused for
				// the domain's quota, which the old one's removal does
				// not bring it under: the refusal must change nothing.
				if err := s.moveAdmitted(ctx, r.Domain, old); err != nil {
					return registry.Registration{}, err
				}
				_, err := s.store.Delete(ctx, old.Node, old.Type)
				s.changed(old.Node)
				if err == nil || errors.Is(err, registry.ErrUnconfirmed) {
					// Nothing can be sent to the old node any more.
					s.redeliver.forget(old.Node, old.Secret)
				}
				if errors.Is(err, registry.ErrUnconfirmed) {
					// The old node is gone; the device's next try
					// registers the new one.
					s.unconfirmed("move to another app", old.Type, old.Node, err)
				}
				if err != nil && !errors.Is(err, registry.ErrNotFound) {
					return registry.Registration{}, fmt.Errorf("replacing registration: %w", err)
				}
				moved = true
			}
			if r.Node, err = randomHex(nodeBytes); err != nil {
				return registry.Registration{}, err
			}
			r.Node = prefix + r.Node
		default:
			return registry.Registration{}, fmt.Errorf("looking up device: %w", err)
		}
		stored, err := s.register(ctx, caller, owner, r, moved)
		if errors.Is(err, registry.ErrConflict) && attempt < maxConflictRetries {
			continue
		}
		return stored, err
	}
}

func (s *Service) unregisterKeyed(ctx context.Context, typ string, account Account, parts []string) (registry.Registration, error) {
	key, err := s.salted(ctx, "device", parts...)
	if err != nil {
		return registry.Registration{}, err
	}
	r, err := s.store.GetByDeviceKey(ctx, key)
	if errors.Is(err, registry.ErrNotFound) || (err == nil && r.Type != typ) {
		return registry.Registration{}, ErrNotFound
	}
	if err != nil {
		return registry.Registration{}, fmt.Errorf("looking up device: %w", err)
	}
	return s.unregister(ctx, Caller{Account: account}, typ, r.Node, key)
}

// moveAdmitted says whether a device's registration old, moved to another
// app under a new node in domain, would be within the domain's quota once
// old is gone.
func (s *Service) moveAdmitted(ctx context.Context, domain string, old registry.Registration) error {
	if s.opts.MaxRegistrationsPerDomain <= 0 || domain == "" {
		return nil
	}
	// One past the quota: old, counted out below, may be among them.
	// (Not past the largest int: a negative limit is none on SQLite and
	// an error on PostgreSQL.)
	n, err := s.store.CountDomain(ctx, domain, max(s.opts.MaxRegistrationsPerDomain, s.opts.MaxRegistrationsPerDomain+1))
	if err != nil {
		return fmt.Errorf("counting registrations of %s: %w", domain, err)
	}
	if old.Domain == domain {
		n--
	}
	if n >= s.opts.MaxRegistrationsPerDomain {
		return fmt.Errorf("%w: %d registrations for %s", ErrQuota, s.opts.MaxRegistrationsPerDomain, domain)
	}
	return nil
}
