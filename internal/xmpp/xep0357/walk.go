package xep0357

import (
	"encoding/xml"
	"fmt"

	"github.com/push-appserver/push-appserver/internal/xmpp/dataform"
)

// UnmarshalXML reads <pubsub/> with a walk over its tokens instead of
// encoding/xml's reflection, a large part of the cost of a push (see the
// README's performance section). The result is the one reflection gives
// for these types, field for field, for every input: the tests check it
// against reflection on the same types, fuzzed. A field added to PubSub or
// the types under it must be read here too, or those tests fail.
func (ps *PubSub) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	if start.Name.Local != "pubsub" {
		return xml.UnmarshalError("expected element type <pubsub> but have <" + start.Name.Local + ">")
	}
	if start.Name.Space != NSPubSub {
		return xml.UnmarshalError(fmt.Sprintf("expected element <pubsub> in name space %s but have %q", NSPubSub, start.Name.Space))
	}
	ps.XMLName = start.Name
	for {
		t, ok, err := child(d)
		if !ok {
			return err
		}
		switch t.Name.Local {
		case "publish":
			if ps.Publish == nil {
				ps.Publish = new(Publish)
			}
			err = ps.Publish.read(d, t)
		case "publish-options":
			if ps.PublishOptions == nil {
				ps.PublishOptions = new(PublishOptions)
			}
			err = ps.PublishOptions.read(d)
		default:
			err = d.Skip()
		}
		if err != nil {
			return err
		}
	}
}

func (p *Publish) read(d *xml.Decoder, start xml.StartElement) error {
	for _, a := range start.Attr {
		if a.Name.Local == "node" {
			p.Node = a.Value
		}
	}
	for {
		t, ok, err := child(d)
		if !ok {
			return err
		}
		if t.Name.Local == "item" {
			p.Items = append(p.Items, Item{})
			err = p.Items[len(p.Items)-1].read(d)
		} else {
			err = d.Skip()
		}
		if err != nil {
			return err
		}
	}
}

func (it *Item) read(d *xml.Decoder) error {
	for {
		t, ok, err := child(d)
		if !ok {
			return err
		}
		if t.Name.Local == "notification" && t.Name.Space == NS {
			if it.Notification == nil {
				it.Notification = new(Notification)
			}
			err = it.Notification.read(d)
		} else {
			err = d.Skip()
		}
		if err != nil {
			return err
		}
	}
}

func (n *Notification) read(d *xml.Decoder) error {
	for {
		t, ok, err := child(d)
		if !ok {
			return err
		}
		switch {
		case t.Name.Local == "x" && t.Name.Space == dataform.NS:
			if n.Form == nil {
				n.Form = new(dataform.Form)
			}
			err = readForm(d, t, n.Form)
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
			n.Encrypted.Payload, err = text(d)
		case t.Name.Local == "priority" && t.Name.Space == NSPriority:
			if n.Priority == nil {
				n.Priority = new(string)
			}
			*n.Priority, err = text(d)
		default:
			err = d.Skip()
		}
		if err != nil {
			return err
		}
	}
}

func (o *PublishOptions) read(d *xml.Decoder) error {
	for {
		t, ok, err := child(d)
		if !ok {
			return err
		}
		if t.Name.Local == "x" && t.Name.Space == dataform.NS {
			if o.Form == nil {
				o.Form = new(dataform.Form)
			}
			err = readForm(d, t, o.Form)
		} else {
			err = d.Skip()
		}
		if err != nil {
			return err
		}
	}
}

func readForm(d *xml.Decoder, start xml.StartElement, f *dataform.Form) error {
	f.XMLName = start.Name
	for _, a := range start.Attr {
		if a.Name.Local == "type" {
			f.Type = a.Value
		}
	}
	for {
		t, ok, err := child(d)
		if !ok {
			return err
		}
		if t.Name.Local == "field" {
			f.Fields = append(f.Fields, dataform.Field{})
			err = readField(d, t, &f.Fields[len(f.Fields)-1])
		} else {
			err = d.Skip()
		}
		if err != nil {
			return err
		}
	}
}

func readField(d *xml.Decoder, start xml.StartElement, f *dataform.Field) error {
	for _, a := range start.Attr {
		switch a.Name.Local {
		case "var":
			f.Var = a.Value
		case "type":
			f.Type = a.Value
		}
	}
	for {
		t, ok, err := child(d)
		if !ok {
			return err
		}
		if t.Name.Local == "value" {
			var v string
			v, err = text(d)
			f.Values = append(f.Values, v)
		} else {
			err = d.Skip()
		}
		if err != nil {
			return err
		}
	}
}

// child returns the next child element of the element being read, or
// ok false at its end (or on an error).
func child(d *xml.Decoder) (t xml.StartElement, ok bool, err error) {
	for {
		tok, err := d.Token()
		if err != nil {
			return t, false, err
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			return tok, true, nil
		case xml.EndElement:
			return t, false, nil
		}
	}
}

// text returns the character data directly inside the element just
// started, skipping child elements, and consumes the element.
func text(d *xml.Decoder) (string, error) {
	var s string
	var buf []byte // only when the text comes in several pieces
	for {
		tok, err := d.Token()
		if err != nil {
			return "", err
		}
		switch t := tok.(type) {
		case xml.CharData:
			if buf == nil && s == "" {
				s = string(t)
				continue
			}
			if buf == nil {
				buf = append([]byte(s), t...)
			} else {
				buf = append(buf, t...)
			}
		case xml.StartElement:
			if err := d.Skip(); err != nil {
				return "", err
			}
		case xml.EndElement:
			if buf != nil {
				return string(buf), nil
			}
			return s, nil
		}
	}
}
