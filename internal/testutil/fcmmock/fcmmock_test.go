package fcmmock

import (
	"crypto/tls"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A validate_only send is checked as a send and answered as FCM answers
// it, with a message name no message has, and delivers nothing: Checks,
// not Requests or Accepted, counts it.
func TestValidateOnlyDeliversNothing(t *testing.T) {
	s, err := New("project-1")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.mu.Lock()
	s.tokens["ya29.test"] = time.Now().Add(time.Hour)
	s.mu.Unlock()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.caPool}, ForceAttemptHTTP2: true}}
	for _, validateOnly := range []bool{true, false} {
		req, _ := http.NewRequest("POST", s.URL+"/v1/projects/project-1/messages:send",
			strings.NewReader(`{"validate_only":`+strconv.FormatBool(validateOnly)+`,"message":{"token":"fcm-device-token:APA91b"}}`))
		req.Header.Set("Authorization", "Bearer ya29.test")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
			t.Fatalf("validate_only %t: %s over HTTP/%d", validateOnly, resp.Status, resp.ProtoMajor)
		}
	}
	checks := s.Checks()
	if len(checks) != 1 || !checks[0].ValidateOnly || !strings.HasSuffix(checks[0].Name, "/fake_message_id") {
		t.Fatalf("checks: %+v", checks)
	}
	if reqs := s.Requests(); s.Accepted() != 1 || len(reqs) != 1 || reqs[0].ValidateOnly {
		t.Fatalf("%d accepted, requests %+v: want the one send without validate_only", s.Accepted(), reqs)
	}
}

// Data is taken up to what FCM was measured to take, and refused one
// byte above: 4,051 bytes of key and value in one pair, 4,045 in two.
func TestDataSizeLimit(t *testing.T) {
	s, err := New("project-1")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.mu.Lock()
	s.tokens["ya29.test"] = time.Now().Add(time.Hour)
	s.mu.Unlock()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.caPool}, ForceAttemptHTTP2: true}}
	for _, c := range []struct {
		data string
		want int
	}{
		{`{"a":"` + strings.Repeat("v", 4050) + `"}`, http.StatusOK},
		{`{"a":"` + strings.Repeat("v", 4051) + `"}`, http.StatusBadRequest},
		{`{"a":"value","b":"` + strings.Repeat("v", 4038) + `"}`, http.StatusOK},
		{`{"a":"value","b":"` + strings.Repeat("v", 4039) + `"}`, http.StatusBadRequest},
	} {
		req, _ := http.NewRequest("POST", s.URL+"/v1/projects/project-1/messages:send",
			strings.NewReader(`{"message":{"token":"fcm-device-token:APA91b","data":`+c.data+`}}`))
		req.Header.Set("Authorization", "Bearer ya29.test")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Fatalf("data of %d bytes: %s, want %d", len(c.data), resp.Status, c.want)
		}
	}
}
