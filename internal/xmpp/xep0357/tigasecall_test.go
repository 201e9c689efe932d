package xep0357_test

import (
	"testing"
)

// A call (Jingle Message Initiation) reaches us from a Tigase server as an
// important push, whichever way the client enabled push: Tigase's
// AbstractPushNotifications.prepareNotificationPayload writes the summary
// with a last-message-body field even for a message without a body (a
// <value/> without text, with-body being on by default), its
// PriorityExtension marks a propose "high" for clients that asked for
// priorities (Siskin does on Tigase: SiskinPushNotificationsModule.swift,
// prepareExtensions), JinglePushNotificationsExtension adds its
// <jingle xmlns='tigase:push:jingle:0'/>, and EncryptedPushNotificationExtension
// types an encrypted call 'voip' (all in tigase/tigase-server,
// src/main/java/tigase/xmpp/impl/push). Priority auto sends each as an
// alert; this guards that reading.
func TestTigaseCallIsImportant(t *testing.T) {
	const jingle = `<jingle xmlns='tigase:push:jingle:0' action='propose' sid='call-1'><media>audio</media></jingle>`
	publish := func(notification string) string {
		return `<iq type='set' from='example.org' to='push.example.net' id='p1'>
  <pubsub xmlns='http://jabber.org/protocol/pubsub'>
    <publish node='tigase-n'><item><notification xmlns='urn:xmpp:push:0'>` + notification + `</notification></item></publish>
  </pubsub>
</iq>`
	}
	summary := func(body string) string {
		return `<x xmlns='jabber:x:data'><field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field>` +
			`<field var='message-count'><value>1</value></field>` +
			`<field var='last-message-sender'><value>romeo@example.net/phone</value></field>` + body + `</x>`
	}
	for name, n := range map[string]string{
		"default":                 summary(`<field var='last-message-body'><value/></field>`) + jingle,
		"with-body off, priority": summary("") + jingle + `<priority xmlns='tigase:push:priority:0'>high</priority>`,
		"encrypted":               `<encrypted xmlns='tigase:push:encrypt:0' type='voip' iv='MTIzNDU2Nzg5MDEy'>c2VjcmV0</encrypted>` + jingle,
	} {
		r, err := parse(t, publish(n))
		if err != nil && r.Node == "" {
			t.Fatalf("%s: %v", name, err)
		}
		if !r.MarkedHigh && (r.Summary == nil || !r.Summary.HasLastMessageBody) {
			t.Errorf("%s: not important: %+v %+v", name, r, r.Summary)
		}
	}
}
