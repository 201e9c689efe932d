package appserver_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
)

// p2's register-push-fcm takes an optional muc field: that channel gets
// its own node and secret on the same device (p2 PushController.register,
// github.com/iNPUTmice/p2), and the registration without one is untouched.
func TestRegisterDeviceChannels(t *testing.T) {
	ctx := context.Background()
	svc, store, _ := newService(t, 0)
	own, err := svc.RegisterDevice(ctx, "fcm", juliet, "dev1", "", "tok")
	if err != nil {
		t.Fatal(err)
	}
	room, err := svc.RegisterDevice(ctx, "fcm", juliet, "dev1", "room@conference.example.org", "tok")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := svc.RegisterDevice(ctx, "fcm", juliet, "dev1", "other@conference.example.org", "tok")
	if room.Node == own.Node || room.Secret == own.Secret || other.Node == room.Node {
		t.Fatalf("channels share nodes or secrets: own %+v room %+v other %+v", own, room, other)
	}
	// What p2 sends back in every push, and Conversations matches: sha1
	// of bare JID, a zero byte and the device id (and of the channel).
	if own.Account != "91065e9185829f3db3c007e46cc2fb81790039ba" ||
		room.Account != "91065e9185829f3db3c007e46cc2fb81790039ba 423e7be35d33ee516d9894ee41b2d061196d7f3a" {
		t.Fatalf("p2 fingerprints: own %q, room %q", own.Account, room.Account)
	}
	again, _ := svc.RegisterDevice(ctx, "fcm", juliet, "dev1", "room@conference.example.org", "tok2")
	if again.Node != room.Node || again.Secret != room.Secret {
		t.Fatalf("re-registering the channel changed node or secret: %+v vs %+v", again, room)
	}

	if _, err := svc.UnregisterDevice(ctx, "fcm", juliet, "dev1", "room@conference.example.org"); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Get(ctx, room.Node); err == nil {
		t.Fatal("the channel's registration survived unregistering it")
	}
	if _, err := store.Get(ctx, own.Node); err != nil {
		t.Fatalf("unregistering the channel removed the device's own registration: %v", err)
	}
	if _, err := svc.UnregisterDevice(ctx, "fcm", juliet, "dev1", "room@conference.example.org"); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("second unregister = %v, want ErrNotFound", err)
	}
	// Another account cannot remove juliet's device.
	romeo := appserver.Account{Bare: "romeo@example.org", Domain: "example.org"}
	if _, err := svc.UnregisterDevice(ctx, "fcm", romeo, "dev1", ""); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("unregister by another account = %v, want ErrNotFound", err)
	}
	if _, err := svc.UnregisterDevice(ctx, "fcm", juliet, "dev1", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Get(ctx, other.Node); err != nil {
		t.Fatalf("the other channel went with the device: %v", err)
	}
}

// Tigase's register-device answers a node and no secret: Siskin enables
// push with the node alone (Siskin IM, SiskinPushNotificationsModule.swift
// enable(): no publish options), so the publish carries none.
func TestRegisterTigase(t *testing.T) {
	ctx := context.Background()
	svc, store, b := newService(t, 0)
	r, err := svc.RegisterTigase(ctx, "apns", juliet, "ab12")
	if err != nil {
		t.Fatal(err)
	}
	// Not an APNS token's shape (hex), which a tokenless publish to the
	// node, once removed, would be taken for.
	if hexDigits, ok := strings.CutPrefix(r.Node, "tigase-"); !ok || len(hexDigits) != 64 || r.Secret != "" {
		t.Fatalf("registration %+v: want a node of tigase- and 64 hex digits, and no secret", r)
	}
	stored, _ := store.Get(ctx, r.Node)
	if stored.Account != juliet.Bare {
		t.Fatalf("stored account %q, want %q (the push must carry it)", stored.Account, juliet.Bare)
	}
	again, _ := svc.RegisterTigase(ctx, "apns", juliet, "ab12")
	if again.Node != r.Node {
		t.Fatalf("registering the same token again gave another node")
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: r.Node}); err != nil {
		t.Fatalf("push without secret to a Tigase node: %v", err)
	}
	if got := b.Sent(); len(got) != 1 || got[0].Token != "ab12" {
		t.Fatalf("sent %+v", got)
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: r.Node, Secret: "guess"}); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("push with a made-up secret = %v, want ErrNotFound", err)
	}
	if _, err := svc.RegisterTigase(ctx, "apns", juliet, "not hex"); !errors.Is(err, appserver.ErrInvalidToken) {
		t.Fatalf("bad token = %v", err)
	}
	if _, err := svc.UnregisterTigase(ctx, "apns", juliet, "ab12"); err != nil {
		t.Fatal(err)
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: r.Node}); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("push after unregister-device = %v", err)
	}
}

// A registration with a secret is never pushed without it.
func TestPushWithoutSecretNeedsSecretlessRegistration(t *testing.T) {
	ctx := context.Background()
	svc, _, _ := newService(t, 0)
	r, _ := svc.Register(ctx, appserver.Caller{}, "apns", "n1", "aa")
	if err := svc.Push(ctx, appserver.PushRequest{Node: r.Node}); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("push without secret = %v, want ErrNotFound", err)
	}
}

// A p2 registration stored before owners were kept has no owner: its
// device key, a salted hash of the account's JID, proves the account, so
// the device's new token keeps its secret (strict mode too) and binds it.
func TestKeyedRegistrationWithoutOwner(t *testing.T) {
	ctx := context.Background()
	for _, strict := range []bool{false, true} {
		store := memory.New()
		svc, _ := appserver.New(store, testApps(&scripted{answers: map[string]error{}}), appserver.Options{StrictRegistration: strict}, slog.New(slog.DiscardHandler))
		a, err := svc.RegisterDevice(ctx, "fcm", juliet, "dev1", "", "tok1")
		if err != nil {
			t.Fatal(err)
		}
		store.Register(ctx, a.Node, func(old registry.Registration, found bool) (registry.Registration, error) {
			old.Owner = ""
			return old, nil
		})
		if _, err := svc.RegisterDevice(ctx, "fcm", juliet, "dev1", "", "tok1"); err != nil {
			t.Fatal(err)
		}
		b, err := svc.RegisterDevice(ctx, "fcm", juliet, "dev1", "", "tok2")
		if err != nil || b.Secret != a.Secret {
			t.Fatalf("strict %v: the device's new token: %v, secret kept %v", strict, err, b.Secret == a.Secret)
		}
		if r, _ := store.Get(ctx, a.Node); r.Owner == "" {
			t.Errorf("strict %v: still unbound", strict)
		}
	}
}

// A device moving to another app (register-push-apns after
// register-push-fcm with the same device id) while its domain holds more
// than its quota (the operator lowered max_registrations_per_domain) is
// refused with wait/resource-constraint: its old registration must then
// still be there, not deleted by the refused move.
func TestRefusedAppMoveKeepsRegistration(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	b := &scripted{answers: map[string]error{}}
	logger := slog.New(slog.DiscardHandler)
	before, err := appserver.New(store, testApps(b), appserver.Options{}, logger)
	if err != nil {
		t.Fatal(err)
	}
	romeo := appserver.Account{Bare: "romeo@example.org", Domain: "example.org"}
	old, err := before.RegisterDevice(ctx, "fcm", juliet, "dev1", "", "tok")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"a", "b"} {
		if _, err := before.RegisterDevice(ctx, "fcm", romeo, d, "", "tok-"+d); err != nil {
			t.Fatal(err)
		}
	}
	// Restarted with a quota the domain already exceeds.
	after, err := appserver.New(store, testApps(b), appserver.Options{MaxRegistrationsPerDomain: 2}, logger)
	if err != nil {
		t.Fatal(err)
	}
	if _, err = after.RegisterDevice(ctx, "apns", juliet, "dev1", "", "ab12"); !errors.Is(err, appserver.ErrQuota) {
		t.Fatalf("move over the quota answered %v", err)
	}
	if got, gerr := store.Get(ctx, old.Node); gerr != nil || got.Token != "tok" {
		t.Fatalf("refused move deleted the device's registration: %+v, %v", got, gerr)
	}
}

// deleteHook runs after between a Delete and whatever follows it: another
// registration of the domain arriving at that moment.
type deleteHook struct {
	*memory.Store
	after func(node string)
}

func (s deleteHook) Delete(ctx context.Context, node, typ string) (registry.Registration, error) {
	r, err := s.Store.Delete(ctx, node, typ)
	if s.after != nil {
		s.after(node)
	}
	return r, err
}

// The commit's other cause, "concurrent registrations past it": the
// quota is checked, the old node deleted, and a registration of another
// user of the domain arriving in between fills the quota; the move is then
// refused and the device has no registration left.
func TestRefusedAppMoveKeepsRegistrationConcurrent(t *testing.T) {
	ctx := context.Background()
	hook := &deleteHook{Store: memory.New()}
	b := &scripted{answers: map[string]error{}}
	svc, err := appserver.New(hook, testApps(b), appserver.Options{MaxRegistrationsPerDomain: 2}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	romeo := appserver.Account{Bare: "romeo@example.org", Domain: "example.org"}
	old, err := svc.RegisterDevice(ctx, "fcm", juliet, "dev1", "", "tok")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.RegisterDevice(ctx, "fcm", romeo, "a", "", "tok-a"); err != nil {
		t.Fatal(err)
	}
	hook.after = func(node string) {
		if node == old.Node {
			if _, err := svc.RegisterDevice(ctx, "fcm", romeo, "b", "", "tok-b"); err != nil {
				t.Errorf("concurrent registration: %v", err)
			}
		}
	}
	_, err = svc.RegisterDevice(ctx, "apns", juliet, "dev1", "", "ab12")
	t.Logf("move answered %v", err)
	if err == nil {
		return // the move went through: the device has a registration
	}
	if got, gerr := hook.Get(ctx, old.Node); gerr != nil || got.Token != "tok" {
		t.Fatalf("refused move (%v) deleted the device's registration: %+v, %v", err, got, gerr)
	}
}

// limitCheckingStore refuses a negative CountDomain limit, as
// PostgreSQL's LIMIT does ("LIMIT must not be negative").
type limitCheckingStore struct{ *memory.Store }

func (s limitCheckingStore) CountDomain(ctx context.Context, domain string, limit int) (int, error) {
	if limit < 0 {
		return 0, errors.New("ERROR: LIMIT must not be negative (SQLSTATE 2201W)")
	}
	return s.Store.CountDomain(ctx, domain, limit)
}

// max_registrations_per_domain as large as it goes (a quota that never
// bites) lets a device move to another app: the count one past the quota
// must not overflow into a negative limit, which PostgreSQL refuses.
func TestAppMoveUnderLargestQuota(t *testing.T) {
	ctx := context.Background()
	store := limitCheckingStore{memory.New()}
	b := &scripted{answers: map[string]error{}}
	svc, err := appserver.New(store, testApps(b), appserver.Options{MaxRegistrationsPerDomain: int(^uint(0) >> 1)}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.RegisterDevice(ctx, "fcm", juliet, "dev1", "", "tok"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.RegisterDevice(ctx, "apns", juliet, "dev1", "", "ab12"); err != nil {
		t.Fatalf("move to another app under the largest quota: %v", err)
	}
}

// The push to a Tigase registration says so, with the account, so that
// the backend writes the fields Siskin's notification extension reads
// of an unencrypted push (NotificationService.swift in tigase/siskin-im:
// "account", "sender", "body"); a p2 registration's account (its
// fingerprints) and a plain one's do not ask for them.
func TestTigasePushNamesItsDialect(t *testing.T) {
	ctx := context.Background()
	svc, _, b := newService(t, 0)
	tg, err := svc.RegisterTigase(ctx, "apns", juliet, "ab12")
	if err != nil {
		t.Fatal(err)
	}
	p2, err := svc.RegisterDevice(ctx, "apns", juliet, "dev1", "", "cd34")
	if err != nil {
		t.Fatal(err)
	}
	plain, err := svc.Register(ctx, appserver.Caller{}, "apns", "n-plain", "ef56")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []appserver.PushRequest{{Node: tg.Node}, {Node: p2.Node, Secret: p2.Secret}, {Node: plain.Node, Secret: plain.Secret}} {
		if err := svc.Push(ctx, r); err != nil {
			t.Fatalf("push to %s: %v", r.Node, err)
		}
	}
	got := b.Sent()
	if len(got) != 3 {
		t.Fatalf("sent %d pushes", len(got))
	}
	if n := got[0]; !n.Tigase || n.Account != juliet.Bare {
		t.Errorf("push to the Tigase registration: Tigase %v, account %q", n.Tigase, n.Account)
	}
	for _, n := range got[1:] {
		if n.Tigase {
			t.Errorf("push to %s taken for a Tigase one", n.Node)
		}
	}
}
