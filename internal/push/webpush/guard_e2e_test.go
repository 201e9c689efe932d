package webpush_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/webpush"
	"github.com/push-appserver/push-appserver/internal/testutil/webpushmock"
)

// TestGuardRefusesAtConnect: with private addresses refused (the
// default), a subscription whose name passes registration but resolves to
// loopback when we connect, as after DNS rebinding, is refused before a
// connection is made. The same push with private addresses allowed
// connects, so what refused it was the address.
func TestGuardRefusesAtConnect(t *testing.T) {
	for _, host := range []string{"localhost", "127.0.0.1"} {
		t.Run(host, func(t *testing.T) {
			mock, keyFile, pub := startMock(t)
			ports := []int{mock.Port}
			refusing := newBackend(t, mock, keyFile, webpush.Options{Guard: webpush.Guard{Ports: ports}})
			allowing := newBackend(t, mock, keyFile, webpush.Options{PushDeadline: time.Second, Guard: webpush.Guard{AllowPrivate: true, Ports: ports}})
			sub, err := mock.SubscribeAt("https://"+host+":"+strconv.Itoa(mock.Port), pub)
			if err != nil {
				t.Fatal(err)
			}
			if err := refusing.ValidateToken(sub.JSON); err != nil {
				t.Fatalf("registration refused (addresses are checked at connect): %v", err)
			}
			n := push.Notification{Node: "n1", Token: sub.JSON, Priority: push.PriorityHigh}
			err = refusing.Send(context.Background(), n)
			if !errors.Is(err, webpush.ErrRefused) || push.IsTemporary(err) {
				t.Fatalf("Send = %v, want a refusal", err)
			}
			if mock.Connections() != 0 {
				t.Fatal("the refused push connected to the mock")
			}
			if err := allowing.Send(context.Background(), n); errors.Is(err, webpush.ErrRefused) {
				t.Fatalf("allowed Send = %v", err)
			}
			if mock.Connections() == 0 {
				t.Fatal("nothing reached the mock with private addresses allowed")
			}
		})
	}
}

// TestGuardRefusesBeforeConnect: scheme, port and host allow-list are
// refused at registration and at sending, without a connection.
func TestGuardRefusesBeforeConnect(t *testing.T) {
	mock, keyFile, pub := startMock(t)
	sub, err := mock.Subscribe(pub)
	if err != nil {
		t.Fatal(err)
	}
	for name, g := range map[string]webpush.Guard{
		"default port 443 only": {AllowPrivate: true},
		"other port":            {AllowPrivate: true, Ports: []int{443, 8443}},
		"host not listed":       {AllowPrivate: true, Ports: []int{mock.Port}, Hosts: []string{"fcm.googleapis.com", "*.push.apple.com"}},
	} {
		t.Run(name, func(t *testing.T) {
			b := newBackend(t, mock, keyFile, webpush.Options{Guard: g})
			if err := b.ValidateToken(sub.JSON); !errors.Is(err, webpush.ErrRefused) {
				t.Fatalf("ValidateToken = %v", err)
			}
			err := b.Send(context.Background(), push.Notification{Node: "n1", Token: sub.JSON, Priority: push.PriorityHigh})
			if !errors.Is(err, webpush.ErrRefused) {
				t.Fatalf("Send = %v", err)
			}
		})
	}
	if mock.Connections() != 0 {
		t.Fatal("a refused push connected")
	}
	// The host on the list is taken.
	b := newBackend(t, mock, keyFile, webpush.Options{Guard: webpush.Guard{AllowPrivate: true, Ports: []int{mock.Port}, Hosts: []string{"127.0.0.1"}}})
	if err := b.Send(context.Background(), push.Notification{Node: "n1", Token: sub.JSON, Priority: push.PriorityHigh}); err != nil {
		t.Fatal(err)
	}
}

// TestAnswerBodyCapped: an endless answer is not read to its end.
func TestAnswerBodyCapped(t *testing.T) {
	mock, b, pub := setup(t, webpush.Options{})
	sub := subscribe(t, mock, pub)
	const huge = 256 << 20
	mock.Fail(sub.ID, webpushmock.Fault{Status: 201, BodyBytes: huge})
	if err := b.Send(context.Background(), push.Notification{Node: "n1", Token: sub.JSON, Priority: push.PriorityHigh}); err != nil {
		t.Fatal(err)
	}
	// The mock learns the stream is gone once its writes fail, which
	// happens when Send closes the body.
	if w := mock.OversizeWritten(); w < 0 || w >= huge {
		t.Fatalf("the whole %d-byte answer was read", w)
	}
}
