package xep0357_test

import (
	"errors"
	"testing"

	"github.com/push-appserver/push-appserver/internal/xmpp/xep0357"
)

// FuzzParse feeds arbitrary IQs through decoding and Parse: they never
// panic, and what Parse accepts is a usable request.
func FuzzParse(f *testing.F) {
	f.Add(prosodyPublish)
	f.Add(`<iq><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item><notification xmlns='urn:xmpp:push:0'/></item></publish></pubsub></iq>`)
	f.Add(`<iq><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item><notification xmlns='urn:xmpp:push:0'><priority xmlns='tigase:push:priority:0'>high</priority></notification></item></publish><publish-options><x xmlns='jabber:x:data'><field var='secret'><value>s</value></field><field var='pushModule'><value>m</value></field></x></publish-options></pubsub></iq>`)
	f.Add(`<iq><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node=''/></pubsub></iq>`)
	f.Add(`<iq><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='&#10;'><item><notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data'><field var='message-count'><value>-1</value></field><field var='last-message-body'/></x></notification></item></publish></pubsub></iq>`)
	f.Fuzz(func(t *testing.T, stanza string) {
		r, err := parse(t, stanza)
		if err != nil {
			if errors.Is(err, xep0357.ErrNoSecret) && r.Node == "" {
				t.Fatalf("ErrNoSecret without the rest of the request: %+v", r)
			}
			return
		}
		if r.Node == "" || len(r.Node) > 4096 {
			t.Fatalf("accepted node %q", r.Node)
		}
		if r.Secret == "" {
			t.Fatalf("accepted a publish without a secret: %+v", r)
		}
		if len(r.Options) > 16 {
			t.Fatalf("%d publish options kept", len(r.Options))
		}
	})
}
