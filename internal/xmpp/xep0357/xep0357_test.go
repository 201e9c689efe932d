package xep0357_test

import (
	"encoding/xml"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/xmpp/xep0357"
)

// prosodyPublish is what Prosody 0.12's mod_cloud_notify sends for an
// important message with push_notification_with_body = false.
const prosodyPublish = `<iq type='set' from='example.org' to='push.example.net' id='5c3f'>
  <pubsub xmlns='http://jabber.org/protocol/pubsub'>
    <publish node='NODE'>
      <item>
        <notification xmlns='urn:xmpp:push:0'>
          <x xmlns='jabber:x:data' type='submit'>
            <field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field>
            <field var='message-count'><value>1</value></field>
            <field var='last-message-sender'><value>juliet@example.org/phone</value></field>
            <field var='last-message-body'><value>New Message!</value></field>
          </x>
        </notification>
      </item>
    </publish>
    <publish-options>
      <x xmlns='jabber:x:data' type='submit'>
        <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>
        <field var='secret'><value>SECRET</value></field>
      </x>
    </publish-options>
  </pubsub>
</iq>`

type iq struct {
	PubSub *xep0357.PubSub `xml:"http://jabber.org/protocol/pubsub pubsub"`
}

func parse(t *testing.T, stanza string) (xep0357.Request, error) {
	t.Helper()
	var v iq
	if err := xml.Unmarshal([]byte(stanza), &v); err != nil {
		return xep0357.Request{}, err
	}
	return xep0357.Parse(v.PubSub)
}

// parseInto is parse through ParseInto, given memory that holds an
// earlier push's summary: the result must be Parse's, its summary in that
// memory.
func parseInto(t *testing.T, stanza string) (xep0357.Request, error) {
	t.Helper()
	var v iq
	if err := xml.Unmarshal([]byte(stanza), &v); err != nil {
		return xep0357.Request{}, err
	}
	mem := &push.Summary{MessageCount: 9, PendingSubscriptionCount: 9, LastMessageSender: "earlier", LastMessageBody: "earlier", HasLastMessageBody: true}
	r, err := xep0357.ParseInto(v.PubSub, mem)
	if r.Summary != nil && r.Summary != mem {
		t.Errorf("ParseInto's summary is not in the memory it was given")
	}
	return r, err
}

func TestParse(t *testing.T) {
	unimportant := strings.Replace(prosodyPublish, "<field var='last-message-body'><value>New Message!</value></field>", "", 1)
	noSummary := strings.Replace(prosodyPublish, "<notification xmlns='urn:xmpp:push:0'>", "<notification xmlns='urn:xmpp:push:0'><!-- -->", 1)
	noSummary = noSummary[:strings.Index(noSummary, "<x xmlns='jabber:x:data' type='submit'>")] + noSummary[strings.Index(noSummary, "</x>")+4:]
	extra := strings.Replace(prosodyPublish, "<field var='message-count'>", "<field var='x-unknown'><value>?</value></field><field var='pending-subscription-count'><value>2</value></field><field var='message-count'>", 1)

	bodyField := "<field var='last-message-body'><value>New Message!</value></field>"
	// Prosody lists every field of its summary form; an unimportant stanza
	// has the body field without a value.
	prosodyUnimportant := strings.Replace(prosodyPublish, bodyField, "<field var='last-message-body' type='text-single'/>", 1)
	emptyBody := strings.Replace(prosodyPublish, bodyField, "<field var='last-message-body'><value/></field>", 1)
	marker := func(stanza, prio string) string {
		return strings.Replace(stanza, "<notification xmlns='urn:xmpp:push:0'>", "<notification xmlns='urn:xmpp:push:0'><priority xmlns='tigase:push:priority:0'>"+prio+"</priority>", 1)
	}
	sender := "juliet@example.org/phone"

	tests := []struct {
		name    string
		stanza  string
		want    xep0357.Request
		wantErr bool
	}{
		{"prosody unimportant, body field without value", prosodyUnimportant, xep0357.Request{Node: "NODE", Secret: "SECRET", Summary: &push.Summary{
			MessageCount: 1, LastMessageSender: sender}}, false},
		{"empty body value", emptyBody, xep0357.Request{Node: "NODE", Secret: "SECRET", Summary: &push.Summary{
			MessageCount: 1, LastMessageSender: sender, HasLastMessageBody: true}}, false},
		{"priority marker high", marker(unimportant, "high"), xep0357.Request{Node: "NODE", Secret: "SECRET", MarkedHigh: true, Summary: &push.Summary{
			MessageCount: 1, LastMessageSender: sender}}, false},
		{"priority marker high without summary", marker(noSummary, " high "), xep0357.Request{Node: "NODE", Secret: "SECRET", MarkedHigh: true}, false},
		{"priority marker other", marker(unimportant, "low"), xep0357.Request{Node: "NODE", Secret: "SECRET", Summary: &push.Summary{
			MessageCount: 1, LastMessageSender: sender}}, false},
		{"priority in another namespace", strings.Replace(marker(noSummary, "high"), "tigase:push:priority:0", "urn:example", 1), xep0357.Request{Node: "NODE", Secret: "SECRET"}, false},
		{"prosody important", prosodyPublish, xep0357.Request{Node: "NODE", Secret: "SECRET", Summary: &push.Summary{
			MessageCount: 1, LastMessageSender: "juliet@example.org/phone", LastMessageBody: "New Message!", HasLastMessageBody: true}}, false},
		{"prosody unimportant", unimportant, xep0357.Request{Node: "NODE", Secret: "SECRET", Summary: &push.Summary{
			MessageCount: 1, LastMessageSender: "juliet@example.org/phone"}}, false},
		{"no summary", noSummary, xep0357.Request{Node: "NODE", Secret: "SECRET"}, false},
		{"unknown fields", extra, xep0357.Request{Node: "NODE", Secret: "SECRET", Summary: &push.Summary{
			MessageCount: 1, PendingSubscriptionCount: 2, LastMessageSender: "juliet@example.org/phone", LastMessageBody: "New Message!", HasLastMessageBody: true}}, false},
		// A count below zero means nothing: the push goes out as one
		// without a count, not with the number as it came.
		{"negative counts", strings.Replace(strings.Replace(extra, "<value>2</value>", "<value>-2</value>", 1), "<field var='message-count'><value>1</value>", "<field var='message-count'><value>-5</value>", 1),
			xep0357.Request{Node: "NODE", Secret: "SECRET", Summary: &push.Summary{
				LastMessageSender: "juliet@example.org/phone", LastMessageBody: "New Message!", HasLastMessageBody: true}}, false},
		{"no node", strings.Replace(prosodyPublish, "node='NODE'", "", 1), xep0357.Request{}, true},
		{"no secret", strings.Replace(prosodyPublish, "<field var='secret'><value>SECRET</value></field>", "", 1), xep0357.Request{}, true},
		{"empty secret", strings.Replace(prosodyPublish, "<value>SECRET</value>", "<value></value>", 1), xep0357.Request{}, true},
		{"no publish-options", prosodyPublish[:strings.Index(prosodyPublish, "<publish-options>")] + "</pubsub></iq>", xep0357.Request{}, true},
		{"no publish", `<iq><pubsub xmlns='http://jabber.org/protocol/pubsub'><subscribe node='x'/></pubsub></iq>`, xep0357.Request{}, true},
		{"wrong pubsub namespace", strings.Replace(prosodyPublish, "http://jabber.org/protocol/pubsub'", "urn:example:other'", 1), xep0357.Request{}, true},
		{"wrong form namespace", strings.Replace(prosodyPublish, "<x xmlns='jabber:x:data' type='submit'>\n        <field var='FORM_TYPE'><value>http", "<x xmlns='urn:example' type='submit'>\n        <field var='FORM_TYPE'><value>http", 1), xep0357.Request{}, true},
		{"huge secret", strings.Replace(prosodyPublish, "SECRET", strings.Repeat("s", 5000), 1), xep0357.Request{}, true},
		{"huge node", strings.Replace(prosodyPublish, "node='NODE'", "node='"+strings.Repeat("n", 5000)+"'", 1), xep0357.Request{}, true},
	}
	for _, tt := range tests {
		for _, into := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/into=%t", tt.name, into), func(t *testing.T) {
				got, err := parse(t, tt.stanza)
				if into {
					got, err = parseInto(t, tt.stanza)
				}
				checkParsed(t, got, err, tt.want, tt.wantErr)
			})
		}
	}
}

// checkParsed compares a parse's result with the one wanted: an error
// wrapping ErrMalformed, or the request.
func checkParsed(t *testing.T, got xep0357.Request, err error, want xep0357.Request, wantErr bool) {
	t.Helper()
	if wantErr {
		if err == nil {
			t.Fatalf("accepted: %+v", got)
		}
		if !errors.Is(err, xep0357.ErrMalformed) {
			t.Fatalf("error %v does not wrap ErrMalformed", err)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if got.Node != want.Node || got.Secret != want.Secret || got.MarkedHigh != want.MarkedHigh || (got.Summary == nil) != (want.Summary == nil) ||
		(got.Summary != nil && *got.Summary != *want.Summary) {
		t.Fatalf("got %+v %+v, want %+v %+v", got, got.Summary, want, want.Summary)
	}
}

func TestHugeBodyClipped(t *testing.T) {
	body := strings.Repeat("ä", 5000)
	got, err := parse(t, strings.Replace(prosodyPublish, "New Message!", body, 1))
	if err != nil {
		t.Fatal(err)
	}
	b := got.Summary.LastMessageBody
	if len(b) > 4096 || !strings.HasPrefix(body, b) || strings.ToValidUTF8(b, "?") != b {
		t.Fatalf("body clipped to %d bytes, valid UTF-8: %v", len(b), strings.ToValidUTF8(b, "?") == b)
	}
}

func BenchmarkParse(b *testing.B) {
	data := []byte(prosodyPublish)
	for b.Loop() {
		var v iq
		if err := xml.Unmarshal(data, &v); err != nil {
			b.Fatal(err)
		}
		if _, err := xep0357.Parse(v.PubSub); err != nil {
			b.Fatal(err)
		}
	}
}

// The publish-options of clients that push without a registration: fpush's
// pushModule (Monal; fpush/src/xmpp/message_loop.rs reads it from the
// publish-options form, and the node is the device token), and
// MongooseIM's device_id, service, mode, silent, topic
// (mod_push_service_mongoosepush documentation). Neither carries a secret.
func TestParsePublishOptions(t *testing.T) {
	withOptions := func(fields string) string {
		return strings.Replace(prosodyPublish, "<field var='secret'><value>SECRET</value></field>", fields, 1)
	}
	fpush := withOptions(`<field var='pushModule'><value>monalProdiOS</value></field>`)
	got, err := parse(t, fpush)
	if !errors.Is(err, xep0357.ErrNoSecret) || !errors.Is(err, xep0357.ErrMalformed) {
		t.Fatalf("fpush publish: err %v, want ErrNoSecret (which is malformed for registered nodes)", err)
	}
	if got.Node != "NODE" || got.Options["pushModule"] != "monalProdiOS" || got.Summary == nil {
		t.Fatalf("fpush publish: %+v", got)
	}
	if _, has := got.Options["FORM_TYPE"]; has {
		t.Fatalf("FORM_TYPE among the options: %v", got.Options)
	}

	mongoose := withOptions(`<field var='device_id'><value>fcm-token</value></field><field var='service'><value>fcm</value></field>` +
		`<field var='mode'><value>prod</value></field><field var='silent'><value>false</value></field><field var='topic'><value>im.example</value></field>`)
	got, _ = parse(t, mongoose)
	want := map[string]string{"device_id": "fcm-token", "service": "fcm", "mode": "prod", "silent": "false", "topic": "im.example"}
	if len(got.Options) != len(want) {
		t.Fatalf("MongooseIM options %v, want %v", got.Options, want)
	}
	for k, v := range want {
		if got.Options[k] != v {
			t.Fatalf("MongooseIM options %v, want %v", got.Options, want)
		}
	}

	// With a secret too, the options are still there.
	got, err = parse(t, strings.Replace(prosodyPublish, "<field var='secret'>", "<field var='pushModule'><value>m</value></field><field var='secret'>", 1))
	if err != nil || got.Secret != "SECRET" || got.Options["pushModule"] != "m" {
		t.Fatalf("options beside a secret: %+v, %v", got, err)
	}

	many := ""
	for i := range 40 {
		many += fmt.Sprintf(`<field var='f%d'><value>v</value></field>`, i)
	}
	if got, _ := parse(t, withOptions(many)); len(got.Options) != 16 {
		t.Fatalf("kept %d options, want at most 16", len(got.Options))
	}
	if _, err := parse(t, withOptions(`<field var='device_id'><value>`+strings.Repeat("x", 5000)+`</value></field>`)); err == nil || errors.Is(err, xep0357.ErrNoSecret) {
		t.Fatalf("a 5000-byte option: %v, want a malformed publish", err)
	}
}

// Encrypted notifications: the summary form is replaced by
// <encrypted xmlns='tigase:push:encrypt:0' iv='…'>BASE64</encrypted>, as
// Prosody's mod_cloud_notify_encrypted writes it (handle_push: the form is
// removed, the element added, type='voip' for calls) and Tigase's
// EncryptedPushNotificationExtension does; Tigase adds
// <priority xmlns='tigase:push:priority:0'>high</priority> for messages
// the user should see.
func TestParseEncrypted(t *testing.T) {
	const iv, payload = "MTIzNDU2Nzg5MDEy", "eyJ1bnJlYWQiOjEsInNlbmRlciI6Imp1bGlldEBleGFtcGxlLm9yZyJ9AAAAAAAAAAAAAAAAAAAAAA=="
	encrypted := func(inner string) string {
		start := strings.Index(prosodyPublish, "<x xmlns='jabber:x:data' type='submit'>\n            <field var='FORM_TYPE'><value>urn:xmpp:push:summary")
		end := strings.Index(prosodyPublish, "</notification>")
		return prosodyPublish[:start] + inner + prosodyPublish[end:]
	}
	prosody := encrypted(`<encrypted xmlns='tigase:push:encrypt:0' iv='` + iv + `'>` + payload + `</encrypted>`)
	got, err := parse(t, prosody)
	if err != nil || got.Encrypted == nil || got.Encrypted.Payload != payload || got.Encrypted.IV != iv || got.Summary != nil || got.MarkedHigh {
		t.Fatalf("Prosody's encrypted publish: %+v %+v, %v", got, got.Encrypted, err)
	}
	tigase := encrypted(`<priority xmlns='tigase:push:priority:0'>high</priority><encrypted xmlns='tigase:push:encrypt:0' iv='` + iv + `'>` + payload[:20] + "\n  " + payload[20:] + `</encrypted>`)
	if got, err := parse(t, tigase); err != nil || !got.MarkedHigh || got.Encrypted.Payload != payload {
		t.Fatalf("Tigase's encrypted publish: %+v, %v (whitespace in the base64 must go)", got, err)
	}
	call := encrypted(`<encrypted xmlns='tigase:push:encrypt:0' type='voip' iv='` + iv + `'>` + payload + `</encrypted>`)
	if got, err := parse(t, call); err != nil || !got.MarkedHigh {
		t.Fatalf("encrypted call: %+v, %v; want it marked high", got, err)
	}
	for name, bad := range map[string]string{
		"no iv":      `<encrypted xmlns='tigase:push:encrypt:0'>` + payload + `</encrypted>`,
		"empty":      `<encrypted xmlns='tigase:push:encrypt:0' iv='` + iv + `'/>`,
		"not base64": `<encrypted xmlns='tigase:push:encrypt:0' iv='` + iv + `'>not*base64</encrypted>`,
		"huge":       `<encrypted xmlns='tigase:push:encrypt:0' iv='` + iv + `'>` + strings.Repeat("QUJD", 5000) + `</encrypted>`,
	} {
		if _, err := parse(t, encrypted(bad)); !errors.Is(err, xep0357.ErrMalformed) {
			t.Errorf("%s: %v, want a malformed publish", name, err)
		}
	}
}
