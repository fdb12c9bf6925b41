package qubssim

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"time"
)

// idemEntry is a remembered answer to a POST with an Idempotency-Key.
type idemEntry struct {
	fingerprint [32]byte // route, appointment and canonical payload
	status      int
	body        []byte
	expires     time.Time
}

// maxPostBody bounds the JSON body of the reporting POSTs. reportText may be
// 2 MiB of UTF-8, which JSON escaping can grow up to six-fold; anything
// beyond this is answered 413 without being read.
const maxPostBody = 16 << 20

// post is a reporting POST that passed the checks common to the three
// operations.
type post struct {
	domain   string
	apptID   string
	clientID string
	key      string // "" when the request carries no Idempotency-Key
	body     []byte
	fp       [32]byte
}

// beginPost runs the checks shared by the reporting POSTs, in this order:
// bearer token (401), domain scope (403), Content-Type (415),
// Idempotency-Key syntax (400), body size (413), JSON syntax (400). It
// answers the failure itself and returns nil then.
func (s *Sim) beginPost(w http.ResponseWriter, r *http.Request) *post {
	p := &post{domain: r.PathValue("domain"), apptID: r.PathValue("appointmentId")}
	claims, ok := s.authorize(w, r, p.domain)
	if !ok {
		return nil
	}
	p.clientID = claims.ClientID
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		s.problem(w, r, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		return nil
	}
	if keys := r.Header.Values("Idempotency-Key"); len(keys) > 0 {
		if len(keys) > 1 || !validIdempotencyKey(keys[0]) {
			s.problem(w, r, http.StatusBadRequest, "Idempotency-Key must be one value of 1 to 128 printable ASCII characters (0x21-0x7E)")
			return nil
		}
		p.key = keys[0]
	}
	if r.ContentLength > maxPostBody {
		s.problem(w, r, http.StatusRequestEntityTooLarge, "the request body is too large")
		return nil
	}
	body, tooBig, err := readAllLimited(r.Body, maxPostBody)
	switch {
	case err != nil:
		s.problem(w, r, http.StatusBadRequest, "the request body could not be read")
		return nil
	case tooBig:
		s.problem(w, r, http.StatusRequestEntityTooLarge, "the request body is too large")
		return nil
	}
	canon, err := canonicalJSON(body)
	if err != nil {
		s.problem(w, r, http.StatusBadRequest, "the request body is not a JSON object")
		return nil
	}
	p.body = body
	h := sha256.New()
	h.Write([]byte(r.Pattern))
	h.Write([]byte{0})
	h.Write([]byte(p.apptID))
	h.Write([]byte{0})
	h.Write(canon)
	copy(p.fp[:], h.Sum(nil))
	return p
}

// validIdempotencyKey: "a stable ASCII token ... up to 128 characters";
// control characters and spaces are refused so that keys survive every
// proxy and log unchanged.
func validIdempotencyKey(k string) bool {
	if len(k) < 1 || len(k) > 128 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// canonicalJSON re-encodes a JSON object with sorted keys and no
// insignificant white space, so that payloads equal as JSON compare equal
// as bytes. Numbers keep their literal spelling.
func canonicalJSON(b []byte) ([]byte, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing data after the JSON value")
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, errors.New("not a JSON object")
	}
	return json.Marshal(v)
}

// scope is the key under which an Idempotency-Key is remembered: keys are
// scoped per client and domain, so two partners (or two domains of one
// partner) cannot collide.
func (p *post) scope() string { return p.clientID + "\x00" + p.domain + "\x00" + p.key }

// answer is what a reporting POST decided while holding s.mu; it is
// written only after the lock is released, so no client can stall the
// simulator by reading slowly.
type answer struct {
	status   int
	body     []byte // JSON of a success or replay
	detail   string // problem detail of a failure
	replayed bool
}

func refuse(status int, detail string) answer { return answer{status: status, detail: detail} }

func created(v any) answer {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only the simulator's own types are marshalled
	}
	return answer{status: http.StatusCreated, body: b}
}

// commit runs a reporting POST's effect atomically with its
// Idempotency-Key check: a remembered key answers the original status and
// body for the same payload and 409 for another; otherwise effect runs and
// its success is remembered for ttl. Only successes are remembered: a
// request refused with 4xx had no effect, so retrying it (corrected, with
// the same key) must not be blocked.
func (s *Sim) commit(w http.ResponseWriter, r *http.Request, p *post, ttl time.Duration, effect func() answer) {
	s.mu.Lock()
	ans, ok := s.replay(p)
	if !ok {
		ans = effect()
		if ans.detail == "" && p.key != "" {
			s.remember(p, ans, ttl)
		}
	}
	s.mu.Unlock()

	if ans.detail != "" {
		s.problem(w, r, ans.status, ans.detail)
		return
	}
	if ans.replayed {
		info(r).replayed = true
		w.Header().Set("Idempotent-Replayed", "true")
	}
	writeBody(w, ans.status, ans.body)
}

// replay looks the request's key up. Callers hold s.mu.
func (s *Sim) replay(p *post) (answer, bool) {
	if p.key == "" {
		return answer{}, false
	}
	e := s.idem[p.scope()]
	if e == nil {
		return answer{}, false
	}
	if !s.clock.Now().Before(e.expires) {
		delete(s.idem, p.scope())
		return answer{}, false
	}
	if e.fingerprint != p.fp {
		return refuse(http.StatusConflict, "the Idempotency-Key was already used with a different payload"), true
	}
	return answer{status: e.status, body: e.body, replayed: true}, true
}

// remember stores a success under the request's key. Callers hold s.mu.
func (s *Sim) remember(p *post, ans answer, ttl time.Duration) {
	now := s.clock.Now()
	if len(s.idem) >= 1024 && len(s.idem)%1024 == 0 {
		for k, e := range s.idem {
			if !now.Before(e.expires) {
				delete(s.idem, k)
			}
		}
	}
	s.idem[p.scope()] = &idemEntry{fingerprint: p.fp, status: ans.status, body: ans.body, expires: now.Add(ttl)}
}
