package qubssim

import (
	"encoding/json"
	"net/http"
	"sort"
	"time"
)

// The admin endpoints serve people running the simulator alone
// ("qubs-fhir-bridge qubs-sim"). They need no token: the simulator is not
// for production.

// faultJSON is a Fault on the wire; Latency is a Go duration string ("250ms").
type faultJSON struct {
	Method        string  `json:"method,omitempty"`
	Route         string  `json:"route,omitempty"`
	Count         int     `json:"count,omitempty"`
	Status        int     `json:"status,omitempty"`
	RetryAfter    string  `json:"retryAfter,omitempty"`
	Latency       string  `json:"latency,omitempty"`
	Drop          bool    `json:"drop,omitempty"`
	AfterHandling bool    `json:"afterHandling,omitempty"`
	Rate          float64 `json:"rate,omitempty"`
}

// uploadView is an UploadRecord without its bytes.
type uploadView struct {
	GUID           string    `json:"guid"`
	FileName       string    `json:"fileName"`
	Category       string    `json:"category"`
	ContentType    string    `json:"contentType,omitempty"`
	IdempotencyKey string    `json:"idempotencyKey,omitempty"`
	CreatedAt      time.Time `json:"createdAt"`
	ExpiresAt      time.Time `json:"expiresAt"`
	Uploaded       bool      `json:"uploaded"`
	Size           int64     `json:"size,omitempty"`
	SHA256         string    `json:"sha256,omitempty"`
}

type domainView struct {
	Reports  map[string][]ReportRecord  `json:"reports"`
	Comments map[string][]CommentRecord `json:"comments"`
	Uploads  map[string][]uploadView    `json:"uploads"`
}

type inspectView struct {
	Domains       map[string]*domainView `json:"domains"`
	TokenRequests []TokenRequest         `json:"tokenRequests"`
	Requests      int                    `json:"requests"`
	Faults        []faultJSON            `json:"faults"`
}

func (s *Sim) adminRoutes() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("GET /_sim/inspect", s.handleInspect)
	m.HandleFunc("GET /_sim/faults", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, faultsJSON(s.Faults()))
	})
	m.HandleFunc("POST /_sim/faults", s.handleAddFault)
	m.HandleFunc("DELETE /_sim/faults", func(w http.ResponseWriter, r *http.Request) {
		s.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	})
	m.HandleFunc("GET /_sim/churn", s.handleChurnGet)
	m.HandleFunc("POST /_sim/churn", s.handleChurnSet)
	m.HandleFunc("POST /_sim/churn/step", s.handleChurnStep)
	m.HandleFunc("POST /_sim/comments", s.handleAddComment)
	m.HandleFunc("/_sim/", func(w http.ResponseWriter, r *http.Request) {
		s.problem(w, r, http.StatusNotFound, "no such admin route")
	})
	return m
}

func faultsJSON(fs []Fault) []faultJSON {
	out := make([]faultJSON, 0, len(fs))
	for _, f := range fs {
		fj := faultJSON{Method: f.Method, Route: f.Route, Count: f.Count, Status: f.Status, RetryAfter: f.RetryAfter, Drop: f.Drop, AfterHandling: f.AfterHandling, Rate: f.Rate}
		if f.Latency > 0 {
			fj.Latency = f.Latency.String()
		}
		out = append(out, fj)
	}
	return out
}

func (s *Sim) handleAddFault(w http.ResponseWriter, r *http.Request) {
	var fj faultJSON
	d := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	d.DisallowUnknownFields()
	if err := d.Decode(&fj); err != nil {
		s.problem(w, r, http.StatusBadRequest, "body must be a JSON fault: "+err.Error())
		return
	}
	f := Fault{Method: fj.Method, Route: fj.Route, Count: fj.Count, Status: fj.Status, RetryAfter: fj.RetryAfter, Drop: fj.Drop, AfterHandling: fj.AfterHandling, Rate: fj.Rate}
	if f.Rate < 0 || f.Rate > 1 {
		s.problem(w, r, http.StatusBadRequest, "rate must be between 0 and 1")
		return
	}
	if fj.Latency != "" {
		lat, err := time.ParseDuration(fj.Latency)
		if err != nil || lat < 0 {
			s.problem(w, r, http.StatusBadRequest, "latency must be a Go duration such as 250ms")
			return
		}
		f.Latency = lat
	}
	if f.Status != 0 && (f.Status < 400 || f.Status > 599) {
		s.problem(w, r, http.StatusBadRequest, "status must be an HTTP error status (400-599)")
		return
	}
	if f.Count < 0 {
		s.problem(w, r, http.StatusBadRequest, "count must not be negative")
		return
	}
	s.AddFault(f)
	writeJSON(w, http.StatusCreated, faultsJSON([]Fault{f})[0])
}

func (s *Sim) handleInspect(w http.ResponseWriter, r *http.Request) {
	v := inspectView{Domains: map[string]*domainView{}}
	s.mu.Lock()
	names := make([]string, 0, len(s.domains))
	for n := range s.domains {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		dv := &domainView{Reports: map[string][]ReportRecord{}, Comments: map[string][]CommentRecord{}, Uploads: map[string][]uploadView{}}
		for id, a := range s.domains[n].appts {
			if len(a.reports) > 0 {
				dv.Reports[id] = append([]ReportRecord(nil), a.reports...)
			}
			if len(a.created) > 0 {
				dv.Comments[id] = append([]CommentRecord(nil), a.created...)
			}
			for _, u := range a.uploads {
				dv.Uploads[id] = append(dv.Uploads[id], uploadView{
					GUID: u.rec.GUID, FileName: u.rec.FileName, Category: u.rec.Category, ContentType: u.rec.ContentType,
					IdempotencyKey: u.rec.IdempotencyKey, CreatedAt: u.rec.CreatedAt, ExpiresAt: u.rec.ExpiresAt,
					Uploaded: u.rec.Uploaded, Size: u.rec.Size, SHA256: u.rec.SHA256,
				})
			}
		}
		v.Domains[n] = dv
	}
	s.mu.Unlock()
	v.TokenRequests = append([]TokenRequest{}, s.TokenRequests()...)
	v.Requests = len(s.Requests())
	v.Faults = faultsJSON(s.Faults())
	writeJSON(w, http.StatusOK, v)
}

// otherComment is a comment "someone else" adds in QUBS (a QUBS user, or
// another partner): {"domain":"acme","appointmentId":"A1","commentText":
// "...","isAlert":true}, or "patientId" instead of "appointmentId" for a
// patient-level one.
type otherComment struct {
	Domain        string `json:"domain"`
	AppointmentID string `json:"appointmentId"`
	PatientID     string `json:"patientId"`
	CommentText   string `json:"commentText"`
	IsAlert       bool   `json:"isAlert"`
}

// handleAddComment adds a comment as QUBS's own users do, outside the
// integration API (nothing in CreatedComments), for what watches QUBS
// for comments: 201 with the comment.
func (s *Sim) handleAddComment(w http.ResponseWriter, r *http.Request) {
	var oc otherComment
	if !s.decodeAdmin(w, r, &oc) {
		return
	}
	if oc.CommentText == "" || (oc.AppointmentID == "") == (oc.PatientID == "") {
		s.problem(w, r, http.StatusBadRequest, "commentText and one of appointmentId or patientId are required")
		return
	}
	c := s.AddComment(oc.Domain, oc.AppointmentID, oc.PatientID, oc.CommentText, oc.IsAlert)
	if c == nil {
		s.problem(w, r, http.StatusNotFound, "no such domain or appointment")
		return
	}
	writeJSON(w, http.StatusCreated, c)
}
