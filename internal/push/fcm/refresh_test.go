package fcm_test

import (
	"sync"
	"testing"
	"time"
)

// TestAccessTokenRenewedAheadOfExpiry guards the hourly renewal of the
// access token: it is fetched in the background while the token in use
// still has time left, so that neither a slow nor a failing token
// endpoint at that moment holds or fails the pushes that the token
// still in use would have carried through.
func TestAccessTokenRenewedAheadOfExpiry(t *testing.T) {
	m, o := setup(t)
	// Tokens for 12 s: FCM takes the first until 12 s after it was
	// issued.
	m.SetTokenTTL(12 * time.Second)
	o.PushDeadline = time.Second
	b := newBackend(t, o)
	if err := send(b, nil); err != nil {
		t.Fatal(err)
	}
	issued := time.Now()
	first := m.Requests()[0].Bearer

	// The token endpoint now answers later than a push may wait.
	m.SetTokenDelay(3 * time.Second)
	// 2.5 s on, the token has over 9 s left at FCM.
	time.Sleep(time.Until(issued.Add(2500 * time.Millisecond)))
	if err := send(b, nil); err != nil {
		t.Fatalf("push with the access token valid for %v more: %v", time.Until(issued.Add(12*time.Second)), err)
	}

	// Half its life on, a new token is fetched in the background, and
	// the pushes meanwhile go with the old one.
	m.SetTokenDelay(200 * time.Millisecond)
	time.Sleep(time.Until(issued.Add(6500 * time.Millisecond)))
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if err := send(b, nil); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for m.TokenRequests() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d token requests: the token was not renewed ahead of its expiry", m.TokenRequests())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for {
		if err := send(b, nil); err != nil {
			t.Fatal(err)
		}
		reqs := m.Requests()
		if reqs[len(reqs)-1].Bearer != first {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the renewed token is not used")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The pushes that found the token due for renewal shared one fetch.
	if n := m.TokenRequests(); n != 2 {
		t.Fatalf("%d token requests, want 2", n)
	}
}
