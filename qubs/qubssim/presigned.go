package qubssim

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// The presigned URLs stand for an S3-compatible object store: they need no
// bearer token (the sealed token in the path is the credential) and answer
// errors as S3 does, in XML, not as QUBS problems.

// handleDownload serves an attachment's bytes through a presigned URL. The
// URL keeps working until it expires even if the appointment leaves
// PENDING REPORTING meanwhile, as a presigned object URL would.
func (s *Sim) handleDownload(w http.ResponseWriter, r *http.Request) {
	var c downloadClaims
	if s.unseal("download", r.PathValue("token"), &c) != nil {
		s3Fail(w, r, http.StatusForbidden, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.")
		return
	}
	if !s.clock.Now().Before(time.Unix(c.X, 0)) {
		s3Fail(w, r, http.StatusForbidden, "AccessDenied", "Request has expired")
		return
	}
	var (
		body    []byte
		ct      string
		name    string
		modTime time.Time
		found   bool
	)
	s.mu.Lock()
	if a := s.appt(c.D, c.A); a != nil {
		for _, at := range a.attachments {
			if at.meta.GUID == c.G && (at.upload == nil || at.upload.rec.Uploaded) {
				body, ct = at.contentOf()
				name = at.meta.FileName
				if at.meta.LastModifiedDateTime != nil {
					modTime = *at.meta.LastModifiedDateTime
				}
				found = true
				break
			}
		}
	}
	s.mu.Unlock()
	if !found {
		s3Fail(w, r, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
		return
	}
	sum := md5.Sum(body)
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Disposition", contentDisposition(c.P, name))
	w.Header().Set("ETag", `"`+hex.EncodeToString(sum[:])+`"`)
	// ServeContent sets Content-Length and honours Range and HEAD, as an
	// object store does.
	http.ServeContent(w, r, "", modTime, bytes.NewReader(body))
}

// contentDisposition builds `inline; filename="x.pdf"`, adding an RFC 5987
// filename* with the UTF-8 name when the name is not plain ASCII
// (RFC 6266 section 4.3).
func contentDisposition(disp, name string) string {
	ascii := true
	var fb strings.Builder
	for _, r := range name {
		switch {
		case r == '"' || r == '\\':
			fb.WriteByte('\\')
			fb.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fb.WriteByte('_')
		case r > 0x7e:
			ascii = false
			fb.WriteByte('_')
		default:
			fb.WriteRune(r)
		}
	}
	v := fmt.Sprintf(`%s; filename="%s"`, disp, fb.String())
	if !ascii {
		v += "; filename*=UTF-8''" + strings.ReplaceAll(url.PathEscape(name), "'", "%27")
	}
	return v
}

// handleUpload receives a report artifact through a presigned upload URL.
// Checks, in order: token (403 SignatureDoesNotMatch), expiry (403
// AccessDenied), already uploaded (by Options.UsedUploadURL: 409
// UploadAlreadyCompleted, 403 AccessDenied, or accepted and overwritten),
// Content-Length present and not chunked (411), at most 2 MiB (413, body
// not read), Content-Type equal to the declared contentType, parameters
// ignored (415), body as long as Content-Length (400 IncompleteBody), and
// expiry again at completion ("must complete before
// uploadUrlExpiresAtUtc"). Success is 200 with an ETag and no body, as S3
// answers a PUT.
func (s *Sim) handleUpload(w http.ResponseWriter, r *http.Request) {
	var c uploadClaims
	if s.unseal("upload", r.PathValue("token"), &c) != nil {
		s3Fail(w, r, http.StatusForbidden, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.")
		return
	}
	exp := time.Unix(c.X, 0)
	if !s.clock.Now().Before(exp) {
		s3Fail(w, r, http.StatusForbidden, "AccessDenied", "Request has expired")
		return
	}
	s.mu.Lock()
	u := s.findUpload(c)
	var uploaded bool
	var declared string
	if u != nil {
		uploaded, declared = u.rec.Uploaded, u.rec.ContentType
	}
	s.mu.Unlock()
	switch {
	case u == nil:
		s3Fail(w, r, http.StatusNotFound, "NoSuchUpload", "The specified upload does not exist.")
		return
	case uploaded && s.usedPut != UsedUploadOverwrite:
		s.refuseUsed(w, r)
		return
	case r.ContentLength < 0 || r.Header.Get("Content-Length") == "":
		s3Fail(w, r, http.StatusLengthRequired, "MissingContentLength", "You must provide the Content-Length HTTP header.")
		return
	case r.ContentLength > qubs.MaxUploadBytes:
		// Refuse without reading: closing the connection stops the client
		// sending the rest.
		w.Header().Set("Connection", "close")
		s3Fail(w, r, http.StatusRequestEntityTooLarge, "EntityTooLarge", fmt.Sprintf("Your proposed upload exceeds the maximum allowed size of %d bytes.", qubs.MaxUploadBytes))
		return
	}
	putCT := r.Header.Get("Content-Type")
	if declared != "" {
		mt, _, err := mime.ParseMediaType(putCT)
		if err != nil || !strings.EqualFold(mt, declared) {
			s3Fail(w, r, http.StatusUnsupportedMediaType, "InvalidContentType", "The Content-Type header must equal the contentType declared when the upload URL was created.")
			return
		}
	}
	buf := make([]byte, r.ContentLength)
	if _, err := io.ReadFull(r.Body, buf); err != nil {
		s3Fail(w, r, http.StatusBadRequest, "IncompleteBody", "You did not provide the number of bytes specified by the Content-Length HTTP header.")
		return
	}

	s.mu.Lock()
	now := s.clock.Now()
	switch {
	case !now.Before(exp):
		s.mu.Unlock()
		s3Fail(w, r, http.StatusForbidden, "AccessDenied", "Request has expired")
		return
	case u.rec.Uploaded && s.usedPut != UsedUploadOverwrite: // a concurrent PUT won
		s.mu.Unlock()
		s.refuseUsed(w, r)
		return
	}
	u.rec.Puts++
	sha := sha256.Sum256(buf)
	u.rec.Uploaded = true
	u.rec.UploadedAt = now
	u.rec.PutContentType = putCT
	u.rec.Size = int64(len(buf))
	u.rec.SHA256 = hex.EncodeToString(sha[:])
	u.rec.Bytes = buf
	if a := s.appt(c.D, c.A); a != nil {
		for _, at := range a.attachments {
			if at.upload == u {
				mod := now.UTC().Truncate(time.Second)
				at.meta.LastModifiedDateTime = &mod
			}
		}
	}
	s.mu.Unlock()
	sum := md5.Sum(buf)
	w.Header().Set("ETag", `"`+hex.EncodeToString(sum[:])+`"`)
	w.WriteHeader(http.StatusOK)
}

// refuseUsed answers a PUT to a URL that already took one, as the
// configured store would.
func (s *Sim) refuseUsed(w http.ResponseWriter, r *http.Request) {
	if s.usedPut == UsedUploadForbidden {
		s3Fail(w, r, http.StatusForbidden, "AccessDenied", "Request has expired")
		return
	}
	s3Fail(w, r, http.StatusConflict, "UploadAlreadyCompleted", "This upload URL has already received a successful PUT; request a new URL.")
}

// findUpload returns the upload slot a token names. Callers hold s.mu.
func (s *Sim) findUpload(c uploadClaims) *upload {
	a := s.appt(c.D, c.A)
	if a == nil {
		return nil
	}
	for _, u := range a.uploads {
		if u.rec.GUID == c.G {
			return u
		}
	}
	return nil
}
