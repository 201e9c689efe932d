package component_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/xmpp/adhoc"
	"github.com/push-appserver/push-appserver/internal/xmpp/component"
)

// field returns the first value of the result form's field v in inner.
func field(t *testing.T, inner, v string) string {
	t.Helper()
	m := regexp.MustCompile(`<field var="` + regexp.QuoteMeta(v) + `"[^>]*><value>([^<]*)</value>`).FindStringSubmatch(inner)
	if m == nil {
		t.Fatalf("no field %s in %s", v, inner)
	}
	return m[1]
}

func command(id, from, node string, fields ...string) string {
	var b strings.Builder
	b.WriteString(`<iq type='set' id='` + id + `' from='` + from + `' to='` + compJID + `'><command xmlns='http://jabber.org/protocol/commands' node='` + node + `' action='execute'><x xmlns='jabber:x:data' type='submit'>`)
	for i := 0; i+1 < len(fields); i += 2 {
		b.WriteString(`<field var='` + fields[i] + `'><value>` + fields[i+1] + `</value></field>`)
	}
	b.WriteString(`</x></command></iq>`)
	return b.String()
}

// siskinPublish is a publish as the user's server sends it for a node
// Siskin enabled: Siskin's enable carries no publish-options form
// (SiskinPushNotificationsModule.enable in tigase/siskin-im), so neither
// does the publish.
func siskinPublish(id, node string) string {
	return `<iq type='set' from='example.org' to='` + compJID + `' id='` + id + `'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='` + node + `'><item><notification xmlns='urn:xmpp:push:0'/></item></publish></pubsub></iq>`
}

// Tigase's register-device as TigaseSwift's
// TigasePushNotificationsModule.registerDevice sends it (fields provider
// and device-token; tigase/Martin), with the provider Siskin uses, and
// the answer RegistrationResult reads: node, features, max-payload-size.
func TestTigaseRegisterDevice(t *testing.T) {
	f := newFixtureWith(t, 0, secret, func(o *component.Options) {
		o.Commands.TigaseProviders = map[string]string{"tigase:messenger:apns:1": "apns"}
		o.Commands.MaxPayloadSize = 3072
	})
	st := f.srv.accept(t)

	// Siskin looks for a push component with these features
	// (findPushComponent: "urn:xmpp:push:0" and its provider).
	st.send(t, `<iq type='get' id='d1' from='juliet@example.org/phone' to='`+compJID+`'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`)
	r := st.next(t)
	for _, w := range []string{`var="urn:xmpp:push:0"`, `var="tigase:messenger:apns:1"`, `var="tigase:push:encrypt:aes-128-gcm"`} {
		if !strings.Contains(r.Inner, w) {
			t.Errorf("disco#info lacks %s: %s", w, r.Inner)
		}
	}

	const token = "a1b2c3d4"
	st.send(t, command("r1", "juliet@example.org/phone", adhoc.RegisterDevice, "provider", "tigase:messenger:apns:1", "device-token", token))
	r = st.next(t)
	if r.Type != "result" || !strings.Contains(r.Inner, `status="completed"`) {
		t.Fatalf("register-device: %s %s", r.Type, r.Inner)
	}
	node := field(t, r.Inner, "node")
	if len(node) != len("tigase-")+64 || field(t, r.Inner, "max-payload-size") != "3072" || !strings.Contains(r.Inner, `<field var="features" type="text-multi"><value>tigase:push:encrypt:0</value>`) {
		t.Fatalf("register-device answer %s", r.Inner)
	}
	if strings.Contains(r.Inner, `var="secret"`) {
		t.Fatalf("register-device answered a secret, which Siskin never sends back: %s", r.Inner)
	}

	st.send(t, siskinPublish("p1", node))
	if r := st.next(t); r.Type != "result" {
		t.Fatalf("publish without secret to the registered node: %s %s", r.Type, r.Inner)
	}
	f.backend.mu.Lock()
	sent := f.backend.sent[len(f.backend.sent)-1]
	f.backend.mu.Unlock()
	if sent.Token != token || sent.App != "apns" {
		t.Fatalf("backend got %+v", sent)
	}
	st.send(t, siskinPublish("p2", strings.Repeat("0", 64)))
	if r := st.next(t); !strings.HasPrefix(r.Inner, "<error type='cancel'><item-not-found") {
		t.Fatalf("publish to an unknown node: %s %s", r.Type, r.Inner)
	}

	for _, tc := range []struct{ name, stanza, want string }{
		{"unknown provider", command("r2", "juliet@example.org/phone", adhoc.RegisterDevice, "provider", "tigase:messenger:fcm:1", "device-token", token), "<error type='modify'><bad-request"},
		{"no token", command("r3", "juliet@example.org/phone", adhoc.RegisterDevice, "provider", "tigase:messenger:apns:1"), "<error type='modify'><bad-request"},
		{"from a server", command("r4", "example.org", adhoc.RegisterDevice, "provider", "tigase:messenger:apns:1", "device-token", token), "<error type='modify'><bad-request"},
		{"another account's token", command("r5", "romeo@example.org/pad", adhoc.UnregisterDevice, "provider", "tigase:messenger:apns:1", "device-token", token), "<error type='cancel'><item-not-found"},
		{"unregister", command("r6", "juliet@example.org/tablet", adhoc.UnregisterDevice, "provider", "tigase:messenger:apns:1", "device-token", token), `status="completed"`},
		{"push after unregister", siskinPublish("p3", node), "<error type='cancel'><item-not-found"},
	} {
		st.send(t, tc.stanza)
		if r := st.next(t); !strings.Contains(r.Inner, tc.want) {
			t.Fatalf("%s: reply %s %q, want %q", tc.name, r.Type, r.Inner, tc.want)
		}
	}
}

// Without a dialect whose clients enable push without a secret, a publish
// without one stays malformed.
func TestSecretlessPublishNeedsTigase(t *testing.T) {
	f := newFixture(t, 0, secret)
	st := f.srv.accept(t)
	st.send(t, siskinPublish("p1", "some-node"))
	if r := st.next(t); !strings.HasPrefix(r.Inner, "<error type='modify'><bad-request") {
		t.Fatalf("reply %s %s", r.Type, r.Inner)
	}
}

// p2's register-push-fcm with the optional muc field, as Conversations
// sends it (IqGenerator.pushTokenToAppServer: token, android-id, muc), and
// unregister-push-fcm with channel and android-id
// (IqGenerator.unregisterChannelOnAppServer).
func TestP2Channels(t *testing.T) {
	f := newFixture(t, 0, secret)
	st := f.srv.accept(t)
	const from = "juliet@example.org/phone"
	st.send(t, command("c1", from, adhoc.RegisterFCM, "token", "fcmtok", "android-id", "a1"))
	r := st.next(t)
	own, ownSecret := field(t, r.Inner, "node"), field(t, r.Inner, "secret")
	st.send(t, command("c2", from, adhoc.RegisterFCM, "token", "fcmtok", "android-id", "a1", "muc", "room@conference.example.org"))
	r = st.next(t)
	room, roomSecret := field(t, r.Inner, "node"), field(t, r.Inner, "secret")
	if room == own || roomSecret == ownSecret {
		t.Fatalf("the channel shares node or secret with the device: %s %s", own, room)
	}
	st.send(t, publish("p1", room, roomSecret, true))
	if r := st.next(t); r.Type != "result" {
		t.Fatalf("push to the channel's node: %s %s", r.Type, r.Inner)
	}
	for _, tc := range []struct{ name, stanza, want string }{
		{"full JID as muc", command("c3", from, adhoc.RegisterFCM, "token", "fcmtok", "android-id", "a1", "muc", "room@conference.example.org/nick"), "<error type='modify'><bad-request"},
		{"unregister without device", command("c4", from, adhoc.UnregisterFCM, "channel", "room@conference.example.org"), "<error type='modify'><bad-request"},
		{"unregister channel", command("c5", from, adhoc.UnregisterFCM, "channel", "room@conference.example.org", "android-id", "a1"), `status="completed"`},
		{"channel gone", publish("p2", room, roomSecret, true), "<error type='cancel'><item-not-found"},
		{"device kept", publish("p3", own, ownSecret, true), ""},
		{"unregister again", command("c6", from, adhoc.UnregisterFCM, "channel", "room@conference.example.org", "android-id", "a1"), "<error type='cancel'><item-not-found"},
	} {
		st.send(t, tc.stanza)
		r := st.next(t)
		if (tc.want == "" && r.Type != "result") || !strings.Contains(r.Inner, tc.want) {
			t.Fatalf("%s: reply %s %q, want %q", tc.name, r.Type, r.Inner, tc.want)
		}
	}
}

// optionsPublish is a publish whose publish-options carry fields and no
// secret, as fpush's and MongooseIM's clients have their servers send.
func optionsPublish(id, node string, fields ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(fields); i += 2 {
		b.WriteString(`<field var='` + fields[i] + `'><value>` + fields[i+1] + `</value></field>`)
	}
	return `<iq type='set' from='example.org' to='` + compJID + `' id='` + id + `'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='` + node + `'><item><notification xmlns='urn:xmpp:push:0'/></item></publish>` +
		`<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>` + b.String() + `</x></publish-options></pubsub></iq>`
}

func TestTokenlessAndPublishOptionsAnswers(t *testing.T) {
	f := newFixtureWith(t, 0, secret, func(o *component.Options) {
		o.Dialects = component.Dialects{Tokenless: true, TokenlessApp: "fcm", PublishOptionsTokens: true, PublishOptionsApps: map[string]string{"google": "fcm"}}
	})
	st := f.srv.accept(t)
	for _, tc := range []struct{ name, stanza, wantType, wantInner, token, app string }{
		{"pushModule names the app", optionsPublish("1", "tok-a", "pushModule", "apns"), "result", "", "tok-a", "apns"},
		{"default app", optionsPublish("2", "tok-b"), "result", "", "tok-b", "fcm"},
		{"other fields ignored", optionsPublish("3", "tok-c", "pushModule", "fcm", "x-ejabberd", "1", "x-siskin", "2"), "result", "", "tok-c", "fcm"},
		{"unknown pushModule", optionsPublish("4", "tok-d", "pushModule", "monalProdiOS"), "error", "<error type='wait'><internal-server-error", "", ""},
		{"publish-options token", optionsPublish("5", "some-node", "device_id", "tok-e", "service", "google", "silent", "true"), "result", "", "tok-e", "fcm"},
		{"service naming an app", optionsPublish("6", "some-node", "device_id", "tok-f", "service", "apns"), "result", "", "tok-f", "apns"},
		{"unknown service", optionsPublish("7", "some-node", "device_id", "tok-g", "service", "hms"), "error", "<error type='wait'><internal-server-error", "", ""},
	} {
		st.send(t, tc.stanza)
		r := st.next(t)
		if r.Type != tc.wantType || !strings.HasPrefix(r.Inner, tc.wantInner) {
			t.Fatalf("%s: reply %s %q, want %s %q", tc.name, r.Type, r.Inner, tc.wantType, tc.wantInner)
		}
		if tc.token == "" {
			continue
		}
		f.backend.mu.Lock()
		sent := f.backend.sent[len(f.backend.sent)-1]
		f.backend.mu.Unlock()
		if sent.Token != tc.token || sent.App != tc.app {
			t.Fatalf("%s: backend got %+v, want token %s app %s", tc.name, sent, tc.token, tc.app)
		}
	}
	f.backend.mu.Lock()
	silent := f.backend.sent[3]
	f.backend.mu.Unlock()
	if silent.Token != "tok-e" || silent.Priority != "silent" {
		t.Fatalf("silent=true pushed %+v", silent)
	}
}

// Siskin's encrypted pushes end to end through the component and the core:
// register-device, then a publish as Tigase sends it for that node (no
// secret, the priority marker, the encrypted notification); the backend
// gets ciphertext, IV and the account, as an alert. One too large for the
// push service is answered wait/bad-request: one message's size, on
// which the user's server must not drop the push session (ejabberd does
// on any error of another type).
func TestTigaseEncryptedPush(t *testing.T) {
	f := newFixtureWith(t, 0, secret, func(o *component.Options) {
		o.Commands.TigaseProviders = map[string]string{"tigase:messenger:apns:1": "apns"}
	})
	st := f.srv.accept(t)
	st.send(t, command("r1", "juliet@example.org/phone", adhoc.RegisterDevice, "provider", "tigase:messenger:apns:1", "device-token", "e1e2"))
	node := field(t, st.next(t).Inner, "node")
	publish := func(id string) string {
		return `<iq type='set' from='example.org' to='` + compJID + `' id='` + id + `'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='` + node + `'><item><notification xmlns='urn:xmpp:push:0'>` +
			`<priority xmlns='tigase:push:priority:0'>high</priority><encrypted xmlns='tigase:push:encrypt:0' iv='MTIzNDU2Nzg5MDEy'>c2VjcmV0</encrypted></notification></item></publish></pubsub></iq>`
	}
	st.send(t, publish("p1"))
	if r := st.next(t); r.Type != "result" {
		t.Fatalf("encrypted publish: %s %s", r.Type, r.Inner)
	}
	f.backend.mu.Lock()
	sent := f.backend.sent[len(f.backend.sent)-1]
	f.backend.mu.Unlock()
	if sent.Encrypted == nil || sent.Encrypted.Payload != "c2VjcmV0" || sent.Encrypted.IV != "MTIzNDU2Nzg5MDEy" || sent.Account != "juliet@example.org" || sent.Priority != push.PriorityHigh {
		t.Fatalf("backend got %+v %+v", sent, sent.Encrypted)
	}

	f.backend.mu.Lock()
	f.backend.fail["e1e2"] = fmt.Errorf("apns: 5000-byte payload: %w", push.ErrPayloadTooLarge)
	f.backend.mu.Unlock()
	st.send(t, publish("p2"))
	if r := st.next(t); !strings.HasPrefix(r.Inner, "<error type='wait'><bad-request") {
		t.Fatalf("too large: %s %s", r.Type, r.Inner)
	}
}

// monalV1Register is v1-register-push as Monal 5.0 to 5.1 (Dec 2020 to
// Jun 2022) sends it (monal-im/Monal fc31784e9,
// XMPPIQ.setRegisterOnAppserverWithToken): type apns, node the device's
// identifierForVendor (one for all accounts on the device), the token
// as lower-case hex.
func monalV1Register(id, from, node, token string) string {
	return `<iq type='set' id='` + id + `' from='` + from + `' to='` + compJID + `'><command xmlns='http://jabber.org/protocol/commands' node='v1-register-push' action='execute'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>https://github.com/tmolitor-stud-tu/mod_push_appserver/#v1-register-push</value></field><field var='type'><value>apns</value></field><field var='node'><value>` + node + `</value></field><field var='token'><value>` + token + `</value></field></x></command></iq>`
}

// Monal reads the answer with the query
// "{http://jabber.org/protocol/commands}command<status=complete><node=v1-register-push>/{jabber:x:data}x"
// (MLIQProcessor.handleAppserverNodeRegistered, 98f9f4202^:Monal/Classes/MLIQProcessor.m:531):
// an exact match on status='complete', which mod_push_appserver answers.
// Any other status is "Appserver returned invalid data" to Monal, which
// then never enables push.
func TestMonalV1RegisterAnswerStatus(t *testing.T) {
	f := newFixture(t, 0, secret)
	st := f.srv.accept(t)
	const node, token = "6B29FC40-CA47-1067-B31D-00DD010662DA", "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
	st.send(t, monalV1Register("m1", "juliet@example.org/Monal-iOS.1a2b3c4d", node, token))
	r := st.next(t)
	if r.Type != "result" {
		t.Fatalf("v1-register-push: %s %s", r.Type, r.Inner)
	}
	if !regexp.MustCompile(`<command [^>]*status="complete"`).MatchString(r.Inner) {
		t.Fatalf("Monal matches status='complete' exactly; answer: %s", r.Inner)
	}
}

// Monal with two accounts (on two servers) sends v1-register-push from
// each, with the same node (identifierForVendor) and the same token:
// as under mod_push_appserver, both get the node and its one secret (a
// refusal is "Appserver error" to Monal, which leaves push off for that
// account).
func TestMonalV1TwoAccountsOneDevice(t *testing.T) {
	f := newFixture(t, 0, secret)
	st := f.srv.accept(t)
	const node, token = "6B29FC40-CA47-1067-B31D-00DD010662DA", "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
	st.send(t, monalV1Register("m1", "juliet@example.org/Monal-iOS.1a2b3c4d", node, token))
	r := st.next(t)
	if r.Type != "result" {
		t.Fatalf("first account: %s %s", r.Type, r.Inner)
	}
	first := field(t, r.Inner, "secret")
	st.send(t, monalV1Register("m2", "juliet@example.net/Monal-iOS.1a2b3c4d", node, token))
	r = st.next(t)
	if r.Type != "result" {
		t.Fatalf("second account of the same device, same node and token: %s %s", r.Type, r.Inner)
	}
	if s := field(t, r.Inner, "secret"); s != first {
		t.Fatalf("second account got another secret: the first account's server now pushes with a dead one")
	}
}

// One publish, written in the ways XML allows: prefixes, CDATA,
// character references, attribute order, xml:lang, whitespace between
// elements. encoding/xml reads each as the same push; so must we.
func TestPublishSpellings(t *testing.T) {
	f := newFixture(t, 0, secret)
	st := f.srv.accept(t)
	ctx := context.Background()
	r, err := f.svc.Register(ctx, appserver.Caller{}, "apns", "n1", "tok")
	if err != nil {
		t.Fatal(err)
	}
	s := r.Secret
	const ps = "http://jabber.org/protocol/pubsub"
	variants := map[string]string{
		"prefixed pubsub":       `<iq type='set' from='example.org' to='` + compJID + `' id='ID'><p:pubsub xmlns:p='` + ps + `'><p:publish node='n1'><p:item><notification xmlns='urn:xmpp:push:0'/></p:item></p:publish><p:publish-options><d:x xmlns:d='jabber:x:data' type='submit'><d:field var='secret'><d:value>` + s + `</d:value></d:field></d:x></p:publish-options></p:pubsub></iq>`,
		"cdata secret":          strings.Replace(publish("ID", "n1", s, true), "<value>"+s+"</value>", "<value><![CDATA["+s+"]]></value>", 1),
		"charref secret":        strings.Replace(publish("ID", "n1", s, true), "<value>"+s+"</value>", "<value>&#x"+fmt.Sprintf("%x", s[0])+";"+s[1:]+"</value>", 1),
		"charref node":          strings.Replace(publish("ID", "n1", s, true), "node='n1'", "node='&#110;1'", 1),
		"double quotes":         strings.ReplaceAll(publish("ID", "n1", s, true), "'", `"`),
		"xml:lang":              strings.Replace(publish("ID", "n1", s, true), "<iq ", "<iq xml:lang='en' ", 1),
		"pretty":                strings.ReplaceAll(publish("ID", "n1", s, true), "><", ">\n  <"),
		"attr order":            strings.Replace(publish("ID", "n1", s, true), "<iq type='set' from='example.org'", "<iq from='example.org' type='set'", 1),
		"default ns redeclared": strings.Replace(publish("ID", "n1", s, true), "<publish node='n1'>", "<publish xmlns='"+ps+"' node='n1'>", 1),
		"secret field first": strings.Replace(publish("ID", "n1", s, true),
			"<field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='secret'><value>"+s+"</value></field>",
			"<field var='secret'><value>"+s+"</value></field><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>", 1),
	}
	i := 0
	for name, v := range variants {
		i++
		id := fmt.Sprint("v", i)
		v = strings.Replace(v, "'ID'", "'"+id+"'", 1)
		v = strings.Replace(v, `"ID"`, `"`+id+`"`, 1)
		st.send(t, v)
		got := st.next(t)
		if got.Type != "result" {
			t.Errorf("%s: %s %q\n%s", name, got.Type, got.Inner, v)
		}
	}
}

// sourceOf promises one budget per server "whatever the spelling of its
// name": a trailing dot (RFC 7622 §3.2: stripped before comparing) and
// the A-label of an IDN (RFC 7622 §3.2.1: converted to the U-label)
// name the same domain as the plain spelling.
func TestDeviceLimitDomainSpellings(t *testing.T) {
	publishFrom := publishToVictim(t)
	const limited = "<error type='wait'><service-unavailable"
	for i, tt := range []struct{ from, want string }{
		{"bücher.example", ""},
		{"bücher.example", ""},
		{"xn--bcher-kva.example", limited},
		{"bücher.example.", limited},
		{"juliet@xn--bcher-kva.example/phone", ""}, // the server's users: a budget of their own
		{"romeo@bücher.example/phone", ""},
		{"romeo@bücher.example./phone", limited},
	} {
		got := publishFrom(i, tt.from)
		if tt.want == "" && got.Type != "result" || tt.want != "" && !strings.HasPrefix(got.Inner, tt.want) {
			t.Errorf("publish %d from %s: %s %q, want %q", i+1, tt.from, got.Type, got.Inner, tt.want)
		}
	}
}

// One server gets one per-device budget however its name is written in
// the publish's from, as long as the spelling is its name as JIDs compare
// (RFC 7622 §3.2.2, the mapping the commands' accounts get): full-width
// letters, an ideographic full stop, a soft hyphen (mapped to nothing)
// and a name in NFD are example.org, or bücher.example, all the same. An
// XMPP server that checks the from of a peer's stanzas by its prepared
// domain passes it on as written; each spelling with a budget of its own,
// a server could push a device as often as it likes.
func TestDeviceLimitMappedDomainSpellings(t *testing.T) {
	publishFrom := publishToVictim(t)
	const limited = "<error type='wait'><service-unavailable"
	for i, tt := range []struct{ from, want string }{
		{"example.org", ""},
		{"example.org", ""},
		{"\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.org", limited},
		{"example\u3002org", limited},
		{"exam\u00adple.org", limited},
		{"EXAM\u00adPLE.org", limited},
	} {
		got := publishFrom(i, tt.from)
		if tt.want == "" && got.Type != "result" || tt.want != "" && !strings.HasPrefix(got.Inner, tt.want) {
			t.Errorf("publish %d from %+q: %s %q, want %q", i+1, tt.from, got.Type, got.Inner, tt.want)
		}
	}
}

// tigaseKeeps is what a Tigase server keeps a push registration on when
// the app server answers its publish with an error: these conditions,
// whatever the error's type. Every other condition makes it delete the
// user's registration of the device at once (shouldDisablePush in
// tigase/tigase-server,
// src/main/java/tigase/xmpp/impl/push/AbstractPushNotifications.java),
// and the client is not told: its pushes stop until it enables push
// again.
var tigaseKeeps = regexp.MustCompile(`^<error type='wait'><(internal-server-error|service-unavailable|remote-server-timeout|bad-request) `)

// tigaseServerPublish is a publish as a Tigase server sends it for a
// device Siskin registered with register-device and enabled without
// publish-options (AbstractPushNotifications.prepareNotificationPayload
// and sendPushNotification in tigase/tigase-server): from the user's
// bare domain, a summary form without a type, no publish-options.
func tigaseServerPublish(id, node string) string {
	return `<iq type='set' from='example.org' to='` + compJID + `' id='` + id + `'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='` + node + `'><item><notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data'>` +
		`<field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field><field var='message-count'><value>1</value></field>` +
		`<field var='last-message-sender'><value>romeo@example.net/orchard</value></field><field var='last-message-body'><value>Hi</value></field>` +
		`</x></notification></item></publish></pubsub></iq>`
}

// A Tigase server (Siskin's own, and the server that sends the encrypted
// pushes register-device is made for) decides by the error's condition,
// not its type, whether a failed publish ends the registration. Each
// answer that says "not this time" must keep it there as wait keeps it
// on ejabberd and Prosody: the rate limit's refusal (three messages in a
// burst), and a notification too large for the push service.
func TestTigaseServerKeepsRegistrationOnWait(t *testing.T) {
	f := newFixtureWith(t, time.Hour, secret, func(o *component.Options) {
		o.Commands.TigaseProviders = map[string]string{"tigase:messenger:apns:1": "apns"}
	})
	st := f.srv.accept(t)
	st.send(t, command("r1", "juliet@example.org/phone", adhoc.RegisterDevice, "provider", "tigase:messenger:apns:1", "device-token", "b1b2"))
	node := field(t, st.next(t).Inner, "node")

	// A burst of three: the first goes, the second waits for the next
	// window, the third (over the stream) is refused.
	ctx := context.Background()
	req := appserver.PushRequest{Node: node, Summary: &push.Summary{MessageCount: 1, LastMessageBody: "Hi", HasLastMessageBody: true}}
	if err := f.svc.Push(ctx, req); err != nil {
		t.Fatal(err)
	}
	waiting := make(chan struct{})
	go f.svc.Push(push.WithWaiting(ctx, push.WaitingFuncs{
		PauseFunc:  func() { close(waiting) },
		ResumeFunc: func(context.Context) error { return nil },
	}), req)
	<-waiting
	st.send(t, tigaseServerPublish("p3", node))
	if r := st.next(t); !tigaseKeeps.MatchString(r.Inner) {
		t.Errorf("publish refused by the rate limit answered %s %q: a Tigase server deletes the device's registration on it", r.Type, r.Inner)
	}

	st.send(t, command("r2", "juliet@example.org/phone", adhoc.RegisterDevice, "provider", "tigase:messenger:apns:1", "device-token", "c1c2"))
	large := field(t, st.next(t).Inner, "node")
	f.backend.mu.Lock()
	f.backend.fail["c1c2"] = fmt.Errorf("apns: 5000-byte payload: %w", push.ErrPayloadTooLarge)
	f.backend.mu.Unlock()
	st.send(t, tigaseServerPublish("p4", large))
	if r := st.next(t); !tigaseKeeps.MatchString(r.Inner) {
		t.Errorf("notification too large for the push service answered %s %q: a Tigase server deletes the device's registration on it", r.Type, r.Inner)
	}
}
