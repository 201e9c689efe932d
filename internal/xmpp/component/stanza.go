package component

import (
	"bytes"
	"encoding/xml"
	"strings"
	"sync"
	"unicode/utf8"

	"mellium.im/xmpp/stanza"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/xmpp/adhoc"
	"github.com/push-appserver/push-appserver/internal/xmpp/xep0357"
	"github.com/push-appserver/push-appserver/internal/xmpp/xmlwalk"
)

// Namespaces the component answers besides push and commands.
const (
	nsDiscoInfo  = "http://jabber.org/protocol/disco#info"
	nsDiscoItems = "http://jabber.org/protocol/disco#items"
	nsStanzas    = "urn:ietf:params:xml:ns:xmpp-stanzas"
)

// iq is an incoming IQ with the payloads we handle; anything else stays
// unparsed.
type iq struct {
	ID      string          `xml:"id,attr"`
	Type    string          `xml:"type,attr"`
	From    string          `xml:"from,attr"`
	To      string          `xml:"to,attr"`
	PubSub  *xep0357.PubSub `xml:"http://jabber.org/protocol/pubsub pubsub"`
	Command *adhoc.Command  `xml:"http://jabber.org/protocol/commands command"`
	Info    *discoQuery     `xml:"http://jabber.org/protocol/disco#info query"`
	Items   *discoQuery     `xml:"http://jabber.org/protocol/disco#items query"`
}

// UnmarshalXML reads an IQ with a walk over its tokens instead of
// encoding/xml's reflection: the result is the one reflection gives for
// iq's fields and tags, for every input (FuzzIQWalk holds it to that). A
// field added to iq must be read here too.
func (q *iq) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	return q.walk(&xmlwalk.Decoder{Decoder: d}, &xmlwalk.Token{Kind: xmlwalk.StartElement, Name: start.Name, Attr: start.Attr})
}

// stanzaReader is what an IQ is read from: the stream's decoder, or
// encoding/xml's in the tests.
type stanzaReader interface {
	xmlwalk.Reader
	DecodeElement(v any, start *xml.StartElement) error
}

// walk reads the IQ that start began.
// walk reads the IQ from r, whose last token was start.
func (q *iq) walk(r stanzaReader, start *xmlwalk.Token) error { return q.walkIn(r, start, nil, nil) }

// iqMemory is the memory of a push's payload: walkIn's, and the summary
// that xep0357.ParseInto reads into.
type iqMemory struct {
	pubsub  xep0357.PubSub
	tree    xep0357.Memory
	summary push.Summary // the push request's (xep0357.ParseInto)
}

// streamIQ is an IQ read from the stream together with the memory of its
// payload and the slot of its handler: a publish IQ is then one
// allocation, not five. Neither is ever used for another IQ, so whatever
// keeps hold of the handler's context or the push's summary keeps its own.
type streamIQ struct {
	iq
	mem  iqMemory
	slot push.Slot
}

// walkIn is walk taking the payload's memory from mem, unless it is nil.
// It calls publish, unless it is nil, as a <pubsub/> begins, and keeps
// nothing of the IQ's payloads after it: a publish may carry a long
// message's whole body, and its walk keeps no more of it than a push uses
// (see xep0357.WalkIn), so it is served up to a size other IQs are
// refused at.
func (q *iq) walkIn(r stanzaReader, start *xmlwalk.Token, mem *iqMemory, publish func()) error {
	for _, a := range start.Attr {
		// As reflection does: the last of repeated attributes wins, and
		// the name space of an attribute does not matter.
		switch a.Name.Local {
		case "id":
			q.ID = a.Value
		case "type":
			q.Type = a.Value
		case "from":
			q.From = a.Value
		case "to":
			q.To = a.Value
		}
	}
	raised := false
	for {
		t, ok, err := xmlwalk.Child(r)
		if !ok {
			return err
		}
		// A repeated payload merges into the first, as reflection
		// merges it. The rare payloads go through reflection.
		switch {
		case raised:
			// After a publish the reader let be longer than other IQs,
			// nothing more is kept: a repeated publish would walk with
			// budgets of its own, a command by reflection, whole. The
			// publish is what the IQ is answered for.
			err = r.Skip()
		case t.Name.Local == "pubsub" && t.Name.Space == xep0357.NSPubSub:
			if publish != nil {
				publish()
				raised = true
			}
			var tree *xep0357.Memory
			switch {
			case q.PubSub != nil:
			case mem != nil:
				q.PubSub, tree = &mem.pubsub, &mem.tree
			default:
				q.PubSub = new(xep0357.PubSub)
			}
			err = q.PubSub.WalkIn(r, t, tree)
		case t.Name.Local == "command" && t.Name.Space == adhoc.NS:
			if q.Command == nil {
				q.Command = new(adhoc.Command)
			}
			err = r.DecodeElement(q.Command, &xml.StartElement{Name: t.Name, Attr: t.Attr})
		case t.Name.Local == "query" && t.Name.Space == nsDiscoInfo:
			if q.Info == nil {
				q.Info = new(discoQuery)
			}
			err = r.DecodeElement(q.Info, &xml.StartElement{Name: t.Name, Attr: t.Attr})
		case t.Name.Local == "query" && t.Name.Space == nsDiscoItems:
			if q.Items == nil {
				q.Items = new(discoQuery)
			}
			err = r.DecodeElement(q.Items, &xml.StartElement{Name: t.Name, Attr: t.Attr})
		default:
			err = r.Skip()
		}
		if err != nil {
			return err
		}
	}
}

type discoQuery struct {
	Node string `xml:"node,attr"`
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// writeIQHead writes the opening of a reply to q.
func writeIQHead(b *bytes.Buffer, q *iq, typ string) {
	b.WriteString(`<iq type='`)
	b.WriteString(typ)
	if q.ID != "" {
		// Only the bad-request answer to an IQ without id has none.
		b.WriteString(`' id='`)
		escapeText(b, q.ID)
	}
	if q.From != "" {
		b.WriteString(`' to='`)
		escapeText(b, q.From)
	}
	if q.To != "" {
		b.WriteString(`' from='`)
		escapeText(b, q.To)
	}
	b.WriteString(`'`)
}

// escapeText writes s as xml.EscapeText does. Ids and addresses mostly
// need nothing escaped: those go out as they are, without the copy to a
// []byte that EscapeText takes (three allocations per reply).
func escapeText(b *bytes.Buffer, s string) {
	for i := 0; i < len(s); i++ {
		if !asIs[s[i]] {
			xml.EscapeText(b, []byte(s))
			return
		}
	}
	b.WriteString(s)
}

// asIs holds the bytes xml.EscapeText writes as they are: printable
// ASCII but for the five it escapes. One look a byte, where seven
// comparisons were.
var asIs = func() (t [256]bool) {
	for c := ' '; c < utf8.RuneSelf; c++ {
		t[c] = !strings.ContainsRune(`<>&'"`, c)
	}
	return t
}()

// resultIQ renders an empty result for q.
func resultIQ(b *bytes.Buffer, q *iq) {
	writeIQHead(b, q, "result")
	b.WriteString(`/>`)
}

// payloadIQ renders a result for q carrying v, marshalled.
func payloadIQ(b *bytes.Buffer, q *iq, v any) error {
	writeIQHead(b, q, "result")
	b.WriteString(`>`)
	if err := xml.NewEncoder(b).Encode(v); err != nil {
		return err
	}
	b.WriteString(`</iq>`)
	return nil
}

// errorIQ renders an error reply to q.
func errorIQ(b *bytes.Buffer, q *iq, e stanza.Error) {
	writeIQHead(b, q, "error")
	b.WriteString(`><error type='`)
	b.WriteString(string(e.Type))
	b.WriteString(`'><`)
	b.WriteString(string(e.Condition))
	b.WriteString(` xmlns='` + nsStanzas + `'/>`)
	if t := e.Text[""]; t != "" {
		b.WriteString(`<text xmlns='` + nsStanzas + `'>`)
		escapeText(b, t)
		b.WriteString(`</text>`)
	}
	b.WriteString(`</error></iq>`)
}

func stanzaErr(t stanza.ErrorType, c stanza.Condition, text string) stanza.Error {
	e := stanza.Error{Type: t, Condition: c}
	if text != "" {
		e.Text = map[string]string{"": text}
	}
	return e
}

// disco#info and disco#items answers.
type discoInfo struct {
	XMLName    xml.Name        `xml:"http://jabber.org/protocol/disco#info query"`
	Node       string          `xml:"node,attr,omitempty"`
	Identities []discoIdentity `xml:"identity"`
	Features   []discoFeature  `xml:"feature"`
}

type discoIdentity struct {
	Category string `xml:"category,attr"`
	Type     string `xml:"type,attr"`
	Name     string `xml:"name,attr,omitempty"`
}

type discoFeature struct {
	Var string `xml:"var,attr"`
}

type discoItems struct {
	XMLName xml.Name    `xml:"http://jabber.org/protocol/disco#items query"`
	Node    string      `xml:"node,attr,omitempty"`
	Items   []discoItem `xml:"item"`
}

type discoItem struct {
	JID  string `xml:"jid,attr"`
	Node string `xml:"node,attr,omitempty"`
	Name string `xml:"name,attr,omitempty"`
}
