package push

import (
	"context"
	"io"
	"net/http"
)

// Answer is one HTTP answer of a push service as it came: status, headers
// and the start of the body. Backends decide from a few of its fields; an
// operator asking why pushes do not arrive wants all of it (send-test).
type Answer struct {
	// Method and URL are the request's; the URL carries the device token
	// (APNS) or is the subscription (WebPush), so whoever shows it
	// redacts it.
	Method, URL string
	Status      int
	Header      http.Header
	Body        []byte // at most the limit the backend reads
}

type answerHookKey struct{}

// WithAnswerHook returns a context under which a backend's Send hands fn
// every answer it gets, retries included, in order. Nothing on the push
// path sets one: it is for one-off pushes whose answer is shown.
func WithAnswerHook(ctx context.Context, fn func(Answer)) context.Context {
	return &hookContext{Context: ctx, fn: fn}
}

// hookContext is WithAnswerHook's context: context.WithValue's but that
// it also answers Detach's ownKey.
type hookContext struct {
	context.Context
	fn func(Answer)
}

func (c *hookContext) Value(key any) any {
	switch key {
	case answerHookKey{}:
		return c.fn
	case ownKey{}:
		return c
	}
	return c.Context.Value(key)
}

// AnswerHook returns ctx's answer hook, nil if there is none. Backends
// that read answers without an http.Response hand it each answer
// themselves (ReadBody and DiscardBody do it for the others), and keep
// every header field of an answer for it. One lookup a push: under some
// contexts (context.WithoutCancel's) each allocates.
func AnswerHook(ctx context.Context) func(Answer) {
	fn, _ := ctx.Value(answerHookKey{}).(func(Answer))
	return fn
}

// ReadBody reads at most limit bytes of resp's body and hands the answer
// to ctx's answer hook, if any.
func ReadBody(ctx context.Context, resp *http.Response, limit int64) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if fn := AnswerHook(ctx); fn != nil {
		fn(newAnswer(resp, body))
	}
	return body, err
}

// DiscardBody drains at most limit bytes of a body the backend has no use
// for, so the connection stays reusable; under an answer hook it reads
// and hands it over instead.
func DiscardBody(ctx context.Context, resp *http.Response, limit int64) {
	if fn := AnswerHook(ctx); fn != nil {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, limit))
		fn(newAnswer(resp, body))
		return
	}
	if resp.Body == http.NoBody {
		return // nothing to drain, and a LimitReader less per push
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, limit))
}

func newAnswer(resp *http.Response, body []byte) Answer {
	a := Answer{Status: resp.StatusCode, Header: resp.Header.Clone(), Body: body}
	if r := resp.Request; r != nil {
		a.Method = r.Method
		if r.URL != nil {
			a.URL = r.URL.String()
		}
	}
	return a
}
