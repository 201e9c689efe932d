package xep0357

import (
	"encoding/xml"

	"github.com/push-appserver/push-appserver/internal/xmpp/dataform"
	"github.com/push-appserver/push-appserver/internal/xmpp/xmlwalk"
)

// UnmarshalXML reads <pubsub/> with a walk over its tokens instead of
// encoding/xml's reflection, a large part of the cost of a push (see the
// README's performance section). The result is the one reflection gives
// for these types, field for field, for every input: the tests check it
// against reflection on the same types, fuzzed. A field added to PubSub or
// the types under it must be read here too, or those tests fail.
func (ps *PubSub) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	return ps.Walk(xmlwalk.Decoder{Decoder: d}, xmlwalk.Token{Kind: xmlwalk.StartElement, Name: start.Name, Attr: start.Attr})
}

// Walk reads <pubsub/> from r, whose last token was start.
func (ps *PubSub) Walk(r xmlwalk.Reader, start xmlwalk.Token) error {
	if err := xmlwalk.Expect(start, NSPubSub, "pubsub"); err != nil {
		return err
	}
	ps.XMLName = start.Name
	for {
		t, ok, err := xmlwalk.Child(r)
		if !ok {
			return err
		}
		switch t.Name.Local {
		case "publish":
			if ps.Publish == nil {
				ps.Publish = new(Publish)
			}
			err = ps.Publish.read(r, t)
		case "publish-options":
			if ps.PublishOptions == nil {
				ps.PublishOptions = new(PublishOptions)
			}
			err = ps.PublishOptions.read(r)
		default:
			err = r.Skip()
		}
		if err != nil {
			return err
		}
	}
}

func (p *Publish) read(r xmlwalk.Reader, start xmlwalk.Token) error {
	for _, a := range start.Attr {
		if a.Name.Local == "node" {
			p.Node = a.Value
		}
	}
	for {
		t, ok, err := xmlwalk.Child(r)
		if !ok {
			return err
		}
		if t.Name.Local == "item" {
			p.Items = append(p.Items, Item{})
			err = p.Items[len(p.Items)-1].read(r)
		} else {
			err = r.Skip()
		}
		if err != nil {
			return err
		}
	}
}

func (it *Item) read(r xmlwalk.Reader) error {
	for {
		t, ok, err := xmlwalk.Child(r)
		if !ok {
			return err
		}
		if t.Name.Local == "notification" && t.Name.Space == NS {
			if it.Notification == nil {
				it.Notification = new(Notification)
			}
			err = it.Notification.read(r)
		} else {
			err = r.Skip()
		}
		if err != nil {
			return err
		}
	}
}

func (n *Notification) read(r xmlwalk.Reader) error {
	for {
		t, ok, err := xmlwalk.Child(r)
		if !ok {
			return err
		}
		switch {
		case t.Name.Local == "x" && t.Name.Space == dataform.NS:
			if n.Form == nil {
				n.Form = new(dataform.Form)
			}
			err = readForm(r, t, n.Form)
		case t.Name.Local == "encrypted" && t.Name.Space == NSEncrypt:
			if n.Encrypted == nil {
				n.Encrypted = new(Encrypted)
			}
			for _, a := range t.Attr {
				switch a.Name.Local {
				case "iv":
					n.Encrypted.IV = a.Value
				case "type":
					n.Encrypted.Type = a.Value
				}
			}
			n.Encrypted.Payload, err = xmlwalk.Text(r)
		case t.Name.Local == "priority" && t.Name.Space == NSPriority:
			if n.Priority == nil {
				n.Priority = new(string)
			}
			*n.Priority, err = xmlwalk.Text(r)
		default:
			err = r.Skip()
		}
		if err != nil {
			return err
		}
	}
}

func (o *PublishOptions) read(r xmlwalk.Reader) error {
	for {
		t, ok, err := xmlwalk.Child(r)
		if !ok {
			return err
		}
		if t.Name.Local == "x" && t.Name.Space == dataform.NS {
			if o.Form == nil {
				o.Form = new(dataform.Form)
			}
			err = readForm(r, t, o.Form)
		} else {
			err = r.Skip()
		}
		if err != nil {
			return err
		}
	}
}

func readForm(r xmlwalk.Reader, start xmlwalk.Token, f *dataform.Form) error {
	f.XMLName = start.Name
	for _, a := range start.Attr {
		if a.Name.Local == "type" {
			f.Type = a.Value
		}
	}
	// The fields' first values share one array: a push's forms have
	// a few fields of one value each, and a slice per field was an
	// allocation per field.
	var values []string
	for {
		t, ok, err := xmlwalk.Child(r)
		if !ok {
			return err
		}
		if t.Name.Local == "field" {
			if f.Fields == nil {
				f.Fields = make([]dataform.Field, 0, 4)
			}
			f.Fields = append(f.Fields, dataform.Field{})
			err = readField(r, t, &f.Fields[len(f.Fields)-1], &values)
		} else {
			err = r.Skip()
		}
		if err != nil {
			return err
		}
	}
}

// formTypes are the FORM_TYPEs of a push's forms, read without a copy.
var formTypes = []string{FormSummary, FormPublish}

// readField reads a field into f; its first value goes into values.
func readField(r xmlwalk.Reader, start xmlwalk.Token, f *dataform.Field, values *[]string) error {
	for _, a := range start.Attr {
		switch a.Name.Local {
		case "var":
			f.Var = a.Value
		case "type":
			f.Type = a.Value
		}
	}
	for {
		t, ok, err := xmlwalk.Child(r)
		if !ok {
			return err
		}
		if t.Name.Local == "value" {
			var v string
			if f.Var == "FORM_TYPE" {
				v, err = xmlwalk.TextAmong(r, formTypes...)
			} else {
				v, err = xmlwalk.Text(r)
			}
			if len(f.Values) == 0 {
				if *values == nil {
					*values = make([]string, 0, 4)
				}
				// Capped at one: a second value must not overwrite
				// the next field's first.
				*values = append(*values, v)
				n := len(*values)
				f.Values = (*values)[n-1 : n : n]
			} else {
				f.Values = append(f.Values, v)
			}
		} else {
			err = r.Skip()
		}
		if err != nil {
			return err
		}
	}
}
