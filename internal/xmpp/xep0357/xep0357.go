// Package xep0357 reads the pubsub publish a user's XMPP server sends to an
// app server (XEP-0357 "Push Notifications", §5): which node to push to,
// the secret it was enabled with, and the optional summary of what arrived.
package xep0357

import (
	"encoding/xml"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/xmpp/dataform"
)

// Namespaces of a push publish.
const (
	NS       = "urn:xmpp:push:0"
	NSPubSub = "http://jabber.org/protocol/pubsub"
	// NSPriority marks a push the user should see (Tigase; Prosody's
	// mod_cloud_notify_priority_tag).
	NSPriority   = "tigase:push:priority:0"
	FormSummary  = "urn:xmpp:push:summary"
	FormPublish  = "http://jabber.org/protocol/pubsub#publish-options"
	maxFieldSize = 4096
)

// PubSub is the <pubsub/> payload of a publish IQ.
type PubSub struct {
	XMLName        xml.Name        `xml:"http://jabber.org/protocol/pubsub pubsub"`
	Publish        *Publish        `xml:"publish"`
	PublishOptions *PublishOptions `xml:"publish-options"`
}

// Publish is <publish node='...'><item><notification/></item></publish>.
type Publish struct {
	Node  string `xml:"node,attr"`
	Items []Item `xml:"item"`
}

// Item holds the notification.
type Item struct {
	Notification *Notification `xml:"urn:xmpp:push:0 notification"`
}

// Notification carries the summary form and, from some servers, a
// priority marker.
type Notification struct {
	Form     *dataform.Form `xml:"jabber:x:data x"`
	Priority *string        `xml:"tigase:push:priority:0 priority"`
}

// PublishOptions carries the secret the client enabled push with.
type PublishOptions struct {
	Form *dataform.Form `xml:"jabber:x:data x"`
}

// Request is what a push publish asks for. Dialects that carry more (an
// encrypted payload, tokens in publish-options) add their fields here.
type Request struct {
	Node   string
	Secret string
	// Summary is nil when the publish carried no summary form.
	Summary *push.Summary
	// MarkedHigh: the notification carried
	// <priority xmlns='tigase:push:priority:0'>high</priority>.
	MarkedHigh bool
}

// ErrMalformed is wrapped by every parse error: the publish cannot be a
// push request (answered modify/bad-request).
var ErrMalformed = errors.New("malformed push publish")

// Parse reads a push request out of a decoded <pubsub/>. A missing or
// partial summary and unknown fields are fine: servers differ in what they
// send. Node and secret are required.
func Parse(ps *PubSub) (Request, error) {
	if ps == nil || ps.Publish == nil {
		return Request{}, fmt.Errorf("%w: no publish element", ErrMalformed)
	}
	r := Request{Node: ps.Publish.Node}
	if r.Node == "" {
		return Request{}, fmt.Errorf("%w: publish has no node", ErrMalformed)
	}
	if len(r.Node) > maxFieldSize {
		return Request{}, fmt.Errorf("%w: node too long", ErrMalformed)
	}
	if ps.PublishOptions == nil || ps.PublishOptions.Form == nil {
		return Request{}, fmt.Errorf("%w: no publish-options form with the secret", ErrMalformed)
	}
	secret, ok := ps.PublishOptions.Form.Value("secret")
	if !ok || secret == "" {
		return Request{}, fmt.Errorf("%w: publish-options has no secret", ErrMalformed)
	}
	if len(secret) > maxFieldSize {
		return Request{}, fmt.Errorf("%w: secret too long", ErrMalformed)
	}
	r.Secret = secret
	for _, it := range ps.Publish.Items {
		n := it.Notification
		if n == nil {
			continue
		}
		if n.Form != nil && r.Summary == nil {
			r.Summary = summary(n.Form)
		}
		if n.Priority != nil && strings.TrimSpace(*n.Priority) == "high" {
			r.MarkedHigh = true
		}
	}
	return r, nil
}

func summary(f *dataform.Form) *push.Summary {
	s := &push.Summary{}
	if v, ok := f.Value("message-count"); ok {
		s.MessageCount, _ = strconv.Atoi(v)
	}
	if v, ok := f.Value("pending-subscription-count"); ok {
		s.PendingSubscriptionCount, _ = strconv.Atoi(v)
	}
	s.LastMessageSender, _ = f.Value("last-message-sender")
	// Prosody lists every summary field, with no <value/> for an
	// unimportant stanza; a value, even an empty one, marks an important
	// one.
	if v := f.Values("last-message-body"); len(v) > 0 {
		s.LastMessageBody, s.HasLastMessageBody = v[0], true
	}
	s.LastMessageSender = push.Truncate(s.LastMessageSender, maxFieldSize)
	s.LastMessageBody = push.Truncate(s.LastMessageBody, maxFieldSize)
	return s
}
