package adhoc_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"

	"mellium.im/xmpp/stanza"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/logpush"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
	"github.com/push-appserver/push-appserver/internal/xmpp/adhoc"
	"github.com/push-appserver/push-appserver/internal/xmpp/dataform"
)

const component = "push.example.net"

// newCommands runs the commands over the real core and a real SQLite
// registry.
func newCommands(t *testing.T) (*adhoc.Commands, *appserver.Service) {
	return newCommandsOver(t, func(s *sqlite.Store) registry.Store { return s })
}

func newCommandsOver(t *testing.T, wrap func(*sqlite.Store) registry.Store) (*adhoc.Commands, *appserver.Service) {
	return newCommandsOpts(t, wrap, appserver.Options{})
}

func newCommandsOpts(t *testing.T, wrap func(*sqlite.Store) registry.Store, opts appserver.Options) (*adhoc.Commands, *appserver.Service) {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store := wrap(db)
	b := logpush.New(logger)
	svc, err := appserver.New(store, []appserver.App{
		{Name: "apns", Priority: push.PriorityHigh, Backend: b},
		{Name: "fcm", Priority: push.PriorityHigh, Backend: b},
	}, opts, logger)
	if err != nil {
		t.Fatal(err)
	}
	return adhoc.New(svc, adhoc.Options{V1: true, DefaultApp: "apns", FCMApp: "fcm", APNSApp: "apns"}), svc
}

func command(node string, fields ...string) *adhoc.Command {
	f := &dataform.Form{Type: "submit"}
	for i := 0; i+1 < len(fields); i += 2 {
		f.Fields = append(f.Fields, dataform.Field{Var: fields[i], Values: []string{fields[i+1]}})
	}
	return &adhoc.Command{Node: node, Action: "execute", Form: f}
}

func value(t *testing.T, c *adhoc.Command, v string) string {
	t.Helper()
	s, ok := c.Form.Value(v)
	if !ok {
		t.Fatalf("answer has no field %q: %+v", v, c.Form)
	}
	return s
}

func condition(err error) stanza.Condition {
	var se stanza.Error
	if errors.As(err, &se) {
		return se.Condition
	}
	return ""
}

// lookAllFirst holds the first n device lookups until all n have looked,
// so n registrations of one device surely race between lookup and write.
type lookAllFirst struct {
	*sqlite.Store
	looked sync.WaitGroup
	mu     sync.Mutex
	first  int
}

func (s *lookAllFirst) GetByDeviceKey(ctx context.Context, key string) (registry.Registration, error) {
	r, err := s.Store.GetByDeviceKey(ctx, key)
	s.mu.Lock()
	hold := s.first > 0
	s.first--
	s.mu.Unlock()
	if hold {
		s.looked.Done()
		s.looked.Wait()
	}
	return r, err
}

// Eight register-push-fcm at once for one device: every node and secret
// answered works for a push.
func TestConcurrentRegisterPushFCM(t *testing.T) {
	const n = 8
	cmds, svc := newCommandsOver(t, func(db *sqlite.Store) registry.Store {
		s := &lookAllFirst{Store: db, first: n}
		s.looked.Add(n)
		return s
	})
	ctx := context.Background()
	type pair struct{ node, secret string }
	answers := make(chan pair, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			res, err := cmds.Execute(ctx, "juliet@example.org/phone", component,
				command(adhoc.RegisterFCM, "token", "fcm-token", "device-id", "dev-1"))
			if err != nil {
				t.Error(err)
				return
			}
			answers <- pair{value(t, res, "node"), value(t, res, "secret")}
		})
	}
	wg.Wait()
	close(answers)
	got := 0
	for a := range answers {
		got++
		if err := svc.Push(ctx, appserver.PushRequest{Node: a.node, Secret: a.secret}); err != nil {
			t.Errorf("answered pair %s/%s does not work: %v", a.node, a.secret, err)
		}
	}
	if got != n {
		t.Fatalf("%d of %d answered", got, n)
	}
}

func TestBadNodeRefused(t *testing.T) {
	cmds, _ := newCommands(t)
	for _, node := range []string{"a\nb", "a\x00b", "a\xffb", string(make([]byte, 300))} {
		_, err := cmds.Execute(context.Background(), "juliet@example.org/phone", component,
			command(adhoc.V1Register, "type", "apns", "node", node, "token", "t"))
		if condition(err) != stanza.BadRequest {
			t.Errorf("v1-register-push with node %q: %v, want bad-request", node, err)
		}
	}
}

// A registration made with v1-register-push belongs to the account that
// made it: another JID can neither re-register nor unregister it, the owner
// renews it idempotently and may bring a new token.
func TestV1RegistrationBoundToAccount(t *testing.T) {
	cmds, svc := newCommands(t)
	ctx := context.Background()
	const juliet, romeo = "juliet@example.org/phone", "romeo@example.net/laptop"
	res, err := cmds.Execute(ctx, juliet, component, command(adhoc.V1Register, "type", "apns", "node", "jn", "token", "t1"))
	if err != nil {
		t.Fatal(err)
	}
	secret := value(t, res, "secret")

	// The same device from another of its accounts (Monal: one node for
	// all accounts) renews it and is told the same secret, nothing more.
	if res, err := cmds.Execute(ctx, romeo, component, command(adhoc.V1Register, "type", "apns", "node", "jn", "token", "t1")); err != nil || value(t, res, "secret") != secret {
		t.Fatalf("same node and token from another account: %+v, %v", res, err)
	}
	for _, c := range []*adhoc.Command{
		command(adhoc.V1Register, "type", "apns", "node", "jn", "token", "romeo-token"),
		command(adhoc.V1Register, "type", "fcm", "node", "jn", "token", "romeo-token"),
		command(adhoc.V1Unregister, "type", "apns", "node", "jn"),
	} {
		res, err := cmds.Execute(ctx, romeo, component, c)
		if condition(err) != stanza.Forbidden {
			t.Errorf("%s from another account: %+v, %v; want forbidden", c.Node, res, err)
		}
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: "jn", Secret: secret}); err != nil {
		t.Fatalf("the owner's registration broke: %v", err)
	}

	// The same account from another resource, in another case: the owner.
	res, err = cmds.Execute(ctx, "Juliet@Example.org/tablet", component, command(adhoc.V1Register, "type", "apns", "node", "jn", "token", "t1"))
	if err != nil || value(t, res, "secret") != secret {
		t.Fatalf("owner re-registers the same token: %v, secret changed: %v", err, res)
	}
	res, err = cmds.Execute(ctx, juliet, component, command(adhoc.V1Register, "type", "apns", "node", "jn", "token", "t2"))
	if err != nil || value(t, res, "secret") != secret {
		t.Fatalf("owner brings a new token: %v", err)
	}
	res, err = cmds.Execute(ctx, juliet, component, command(adhoc.V1Unregister, "type", "apns", "node", "jn"))
	if err != nil {
		t.Fatalf("owner unregisters: %v", err)
	}
	if _, ok := res.Form.Value("secret"); ok {
		t.Fatal("v1-unregister-push answered the secret")
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: "jn", Secret: secret}); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("after unregister: %v", err)
	}
}

// register-push-fcm registrations are bound too: another account cannot
// remove them with v1-unregister-push, and the registry keeps only a
// salted hash of the owner.
func TestDeviceRegistrationBoundToAccount(t *testing.T) {
	cmds, svc := newCommandsOver(t, func(s *sqlite.Store) registry.Store { return s })
	ctx := context.Background()
	res, err := cmds.Execute(ctx, "juliet@example.org/phone", component, command(adhoc.RegisterFCM, "token", "t1", "device-id", "dev"))
	if err != nil {
		t.Fatal(err)
	}
	node, secret := value(t, res, "node"), value(t, res, "secret")
	_, err = cmds.Execute(ctx, "romeo@example.net/laptop", component, command(adhoc.V1Unregister, "type", "fcm", "node", node))
	if condition(err) != stanza.Forbidden {
		t.Fatalf("another account unregisters a register-push-fcm node: %v", err)
	}
	_, err = cmds.Execute(ctx, "romeo@example.net/laptop", component, command(adhoc.V1Register, "type", "fcm", "node", node, "token", "t1"))
	if condition(err) != stanza.Forbidden {
		t.Fatalf("another account re-registers a register-push-fcm node with its token: %v", err)
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: node, Secret: secret}); err != nil {
		t.Fatalf("registration broke: %v", err)
	}
}

// A register-push-fcm registration stored before owners were kept has its
// device key and no owner. The device key binds it to its account all the
// same: another account that learns the node can neither replace its token
// nor remove it, while its own account still can.
func TestLegacyDeviceRegistrationBoundToAccount(t *testing.T) {
	var db *sqlite.Store
	cmds, svc := newCommandsOver(t, func(s *sqlite.Store) registry.Store { db = s; return s })
	ctx := context.Background()
	res, err := cmds.Execute(ctx, "juliet@example.org/phone", component, command(adhoc.RegisterFCM, "token", "t1", "device-id", "dev"))
	if err != nil {
		t.Fatal(err)
	}
	node, secret := value(t, res, "node"), value(t, res, "secret")
	// As a registry written before owners were kept holds it.
	if _, err := db.Register(ctx, node, func(old registry.Registration, found bool) (registry.Registration, error) {
		old.Owner = ""
		return old, nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*adhoc.Command{
		command(adhoc.V1Register, "type", "fcm", "node", node, "token", "romeo-token"),
		command(adhoc.V1Unregister, "type", "fcm", "node", node),
	} {
		_, err := cmds.Execute(ctx, "romeo@example.net/laptop", component, c)
		if condition(err) != stanza.Forbidden {
			t.Errorf("%s of juliet's node from romeo: %v, want forbidden", c.Node, err)
		}
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: node, Secret: secret}); err != nil {
		t.Fatalf("juliet's registration broke: %v", err)
	}
	if _, err := cmds.Execute(ctx, "juliet@example.org/phone", component, command(adhoc.UnregisterFCM, "device-id", "dev")); err != nil {
		t.Fatalf("juliet unregisters her own device: %v", err)
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: node, Secret: secret}); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("push after juliet unregistered: %v, want not found", err)
	}
}

// One XMPP domain cannot fill the registry: past the quota its new
// registrations are refused (wait/resource-constraint), renewals and other
// domains go on.
func TestDomainQuota(t *testing.T) {
	cmds, svc := newCommandsOpts(t, func(s *sqlite.Store) registry.Store { return s }, appserver.Options{MaxRegistrationsPerDomain: 2})
	ctx := context.Background()
	reg := func(from string, c *adhoc.Command) (*adhoc.Command, error) {
		return cmds.Execute(ctx, from, component, c)
	}
	first, err := reg("juliet@spam.example/a", command(adhoc.RegisterFCM, "token", "t1", "device-id", "d1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg("romeo@spam.example/a", command(adhoc.V1Register, "type", "apns", "node", "n2", "token", "t2")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*adhoc.Command{
		command(adhoc.RegisterFCM, "token", "t3", "device-id", "d3"),
		command(adhoc.V1Register, "type", "apns", "node", "n3", "token", "t3"),
	} {
		res, err := reg("mallory@spam.example/x", c)
		var se stanza.Error
		if !errors.As(err, &se) || se.Condition != stanza.ResourceConstraint || se.Type != stanza.Wait {
			t.Fatalf("%s past the quota: %+v, %v; want wait/resource-constraint", c.Node, res, err)
		}
	}
	// Renewing is always allowed, and other domains are not affected.
	again, err := reg("juliet@spam.example/a", command(adhoc.RegisterFCM, "token", "t1b", "device-id", "d1"))
	if err != nil || value(t, again, "node") != value(t, first, "node") {
		t.Fatalf("renewal past the quota: %v", err)
	}
	if _, err := reg("juliet@other.example/a", command(adhoc.RegisterFCM, "token", "t4", "device-id", "d1")); err != nil {
		t.Fatalf("another domain: %v", err)
	}
	// A freed place can be taken again.
	if _, err := reg("romeo@spam.example/a", command(adhoc.V1Unregister, "type", "apns", "node", "n2")); err != nil {
		t.Fatal(err)
	}
	if _, err := reg("mallory@spam.example/x", command(adhoc.V1Register, "type", "apns", "node", "n3", "token", "t3")); err != nil {
		t.Fatalf("after a place was freed: %v", err)
	}
	// HTTP registrations carry no domain and are not counted.
	if _, err := svc.Register(ctx, appserver.Caller{}, "apns", "http-node", "t5"); err != nil {
		t.Fatalf("HTTP registration: %v", err)
	}
	// The device renewing its HTTP (or imported) node over XMPP, at the
	// quota: a renewal, which always passes.
	if _, err := reg("juliet@spam.example/a", command(adhoc.V1Register, "type", "apns", "node", "http-node", "token", "t5")); err != nil {
		t.Fatalf("renewal of a node without a domain past the quota: %v", err)
	}
}

// One account cannot register at the speed its server lets it send:
// past AccountRegisterLimit a minute, whatever the command, it is told
// to wait (never cancel, which would end a session), and other accounts
// and HTTP go on.
func TestAccountRegisterLimit(t *testing.T) {
	cmds, svc := newCommandsOpts(t, func(s *sqlite.Store) registry.Store { return s }, appserver.Options{AccountRegisterLimit: 3})
	ctx := context.Background()
	reg := func(from string, c *adhoc.Command) (*adhoc.Command, error) {
		return cmds.Execute(ctx, from, component, c)
	}
	for i, c := range []*adhoc.Command{
		command(adhoc.RegisterFCM, "token", "t1", "device-id", "d1"),
		command(adhoc.V1Register, "type", "apns", "node", "n2", "token", "t2"),
		command(adhoc.V1Unregister, "type", "apns", "node", "n2"),
	} {
		if _, err := reg("mallory@example.org/a", c); err != nil {
			t.Fatalf("command %d within the limit: %v", i, err)
		}
	}
	for _, c := range []*adhoc.Command{
		command(adhoc.RegisterFCM, "token", "t3", "device-id", "d3"),
		command(adhoc.V1Register, "type", "apns", "node", "n3", "token", "t3"),
		command(adhoc.UnregisterFCM, "device-id", "d1"),
	} {
		res, err := reg("mallory@example.org/b", c)
		var se stanza.Error
		if !errors.As(err, &se) || se.Condition != stanza.ResourceConstraint || se.Type != stanza.Wait {
			t.Fatalf("%s past the limit: %+v, %v; want wait/resource-constraint", c.Node, res, err)
		}
	}
	if _, err := reg("juliet@example.org/a", command(adhoc.V1Register, "type", "apns", "node", "n5", "token", "t5")); err != nil {
		t.Fatalf("another account of the domain: %v", err)
	}
	for i := range 5 {
		if _, err := svc.Register(ctx, appserver.Caller{}, "apns", fmt.Sprint("http-", i), "t6"); err != nil {
			t.Fatalf("HTTP registration %d: %v", i, err)
		}
	}
}
