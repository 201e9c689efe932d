package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/push-appserver/push-appserver/internal/appserver"
)

// unregisterDevice answers Siskin's unregistration of a register-device
// registration (PushEventHandler.unregisterDevice in tigase/siskin-im):
// a JSON body {"account", "provider", "device-token"}, answered
// {"result": "success"} once nothing is registered for that account and
// token any more. Siskin removes an account it cannot reach over XMPP
// only after this success, so a device registered no more is success
// too. Anything else is {"result": "error", "error": why}.
func (a *api) unregisterDevice(w http.ResponseWriter, r *http.Request) {
	if !a.admit(w, r, "unregister-device") {
		return
	}
	devices, ok := a.TigaseDevices[strings.ToLower(r.PathValue("jid"))]
	if !ok {
		jsonResult(w, http.StatusNotFound, "no push component with Tigase's commands here by that name")
		return
	}
	body, msg := readBody(r.Body, r.ContentLength, MaxBodySize)
	if msg != "" {
		jsonResult(w, http.StatusBadRequest, msg)
		return
	}
	var req struct {
		Account  string `json:"account"`
		Provider string `json:"provider"`
		Token    string `json:"device-token"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		jsonResult(w, http.StatusBadRequest, "Malformed JSON")
		return
	}
	err := devices.UnregisterTigaseDevice(r.Context(), req.Account, req.Provider, req.Token)
	switch {
	case err == nil, errors.Is(err, appserver.ErrNotFound):
		jsonResult(w, http.StatusOK, "")
	case errors.Is(err, appserver.ErrBadRequest):
		jsonResult(w, http.StatusBadRequest, firstLine(err))
	case errors.Is(err, appserver.ErrForbidden):
		jsonResult(w, http.StatusForbidden, firstLine(err))
	case errors.Is(err, appserver.ErrLimited):
		jsonResult(w, http.StatusTooManyRequests, firstLine(err))
	case errors.Is(err, appserver.ErrUnconfirmed):
		jsonResult(w, http.StatusServiceUnavailable, unconfirmed)
	default:
		a.failed.Log("endpoint", "unregister-device", "err", err)
		jsonResult(w, http.StatusInternalServerError, "Internal server error!")
	}
}

// jsonResult answers status with Tigase's result object: "success" when
// why is empty, else "error" and why.
func jsonResult(w http.ResponseWriter, status int, why string) {
	v := struct {
		Result string `json:"result"`
		Error  string `json:"error,omitempty"`
	}{Result: "success"}
	if why != "" {
		v.Result, v.Error = "error", why
	}
	b, _ := json.Marshal(v)
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}
