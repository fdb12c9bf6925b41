package qubssim_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
)

// newUpload creates one upload URL on A123460 and returns it.
func newUpload(t *testing.T, srv *qubssim.Server, tok, item string) qubs.UploadURL {
	t.Helper()
	resp, body := post(t, srv, tok, apiPath("acme", "/A123460/report/attachments"), `{"items":[`+item+`]}`, nil)
	var u qubs.UploadURLs
	requireJSON(t, resp, body, 201, &u)
	require.Len(t, u.Items, 1)
	return u.Items[0]
}

func put(t *testing.T, u string, ct string, body io.Reader, length int64) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, u, body)
	require.NoError(t, err)
	req.ContentLength = length
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	return send(t, http.DefaultClient, req)
}

// rawRequest writes a request by hand (for what net/http will not send)
// and reads the status line of the answer.
func rawRequest(t *testing.T, srv *qubssim.Server, head string, body []byte) int {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = io.WriteString(conn, head+"\r\n")
	require.NoError(t, err)
	_, err = conn.Write(body)
	require.NoError(t, err)
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.NotEmpty(t, resp.Header.Get("X-Correlation-Id"))
	return resp.StatusCode
}

func TestUploadPut(t *testing.T) {
	srv, clk := startFake(t)
	tok := token(t, srv)
	pdf := []byte("%PDF-1.4 a report")

	t.Run("success, then listed and downloadable", func(t *testing.T) {
		u := newUpload(t, srv, tok, `{"fileName":"final report.pdf","contentType":"application/pdf"}`)

		// Listed at once, without a URL until the PUT succeeds.
		resp, body := get(t, srv, tok, apiPath("acme", "/A123460/attachments/"+u.GUID))
		var a qubs.Attachment
		requireJSON(t, resp, body, 200, &a)
		assert.Nil(t, a.URL)
		assert.Nil(t, a.URLExpiresAtUTC)
		assert.Equal(t, "report", a.Category)
		assert.Contains(t, string(body), `"url":null`)

		resp, body = put(t, u.UploadURL, "application/pdf", bytes.NewReader(pdf), int64(len(pdf)))
		require.Equal(t, 200, resp.StatusCode, string(body))
		assert.NotEmpty(t, resp.Header.Get("ETag"))
		assert.NotEmpty(t, resp.Header.Get("X-Correlation-Id"))

		recs := srv.Uploads("acme", "A123460")
		rec := recs[len(recs)-1]
		sum := sha256.Sum256(pdf)
		assert.True(t, rec.Uploaded)
		assert.Equal(t, int64(len(pdf)), rec.Size)
		assert.Equal(t, hex.EncodeToString(sum[:]), rec.SHA256)
		assert.Equal(t, pdf, rec.Bytes)
		assert.Equal(t, "application/pdf", rec.ContentType)
		assert.Equal(t, "final report.pdf", rec.FileName)

		resp, body = get(t, srv, tok, apiPath("acme", "/A123460/attachments/"+u.GUID))
		requireJSON(t, resp, body, 200, &a)
		require.NotNil(t, a.URL)
		resp, got := get(t, srv, "", *a.URL)
		require.Equal(t, 200, resp.StatusCode)
		assert.Equal(t, pdf, got)
		assert.Equal(t, "application/pdf", resp.Header.Get("Content-Type"))

		// One successful PUT per URL.
		resp, body = put(t, u.UploadURL, "application/pdf", bytes.NewReader(pdf), int64(len(pdf)))
		requireS3Error(t, resp, body, 409, "UploadAlreadyCompleted")
	})

	t.Run("size limit", func(t *testing.T) {
		u := newUpload(t, srv, tok, `{"fileName":"big.dcm"}`)
		exact := bytes.Repeat([]byte{7}, qubs.MaxUploadBytes)
		resp, body := put(t, u.UploadURL, "application/octet-stream", bytes.NewReader(exact), int64(len(exact)))
		require.Equal(t, 200, resp.StatusCode, string(body))

		u = newUpload(t, srv, tok, `{"fileName":"big.dcm"}`)
		// Refused on the header alone, before the body is sent.
		status := rawRequest(t, srv, fmt.Sprintf("PUT %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n", strings.TrimPrefix(u.UploadURL, srv.URL), qubs.MaxUploadBytes+1), []byte("only a little"))
		assert.Equal(t, 413, status)
		// And with the whole body sent by net/http.
		over := append(exact, 1)
		resp, body = put(t, u.UploadURL, "", bytes.NewReader(over), int64(len(over)))
		requireS3Error(t, resp, body, 413, "EntityTooLarge")
		assert.False(t, srv.Uploads("acme", "A123460")[len(srv.Uploads("acme", "A123460"))-1].Uploaded)
	})

	t.Run("content length required", func(t *testing.T) {
		u := newUpload(t, srv, tok, `{"fileName":"a.pdf"}`)
		// Chunked: net/http sends chunked when the length is unknown.
		resp, body := put(t, u.UploadURL, "application/pdf", io.MultiReader(bytes.NewReader(pdf)), -1)
		requireS3Error(t, resp, body, 411, "MissingContentLength")
		// No Content-Length at all.
		path := strings.TrimPrefix(u.UploadURL, srv.URL)
		assert.Equal(t, 411, rawRequest(t, srv, "PUT "+path+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n", nil))
		// Shorter body than announced.
		assert.Equal(t, 400, rawRequest(t, srv, "PUT "+path+" HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n", []byte("ten bytes!")))
		// Still usable afterwards.
		resp, body = put(t, u.UploadURL, "application/pdf", bytes.NewReader(pdf), int64(len(pdf)))
		require.Equal(t, 200, resp.StatusCode, string(body))
	})

	t.Run("content type must match the declared one", func(t *testing.T) {
		u := newUpload(t, srv, tok, `{"fileName":"a.pdf","contentType":"application/pdf"}`)
		for _, ct := range []string{"", "application/octet-stream", "application/dicom", "pdf"} {
			resp, body := put(t, u.UploadURL, ct, bytes.NewReader(pdf), int64(len(pdf)))
			requireS3Error(t, resp, body, 415, "InvalidContentType")
		}
		resp, body := put(t, u.UploadURL, "Application/PDF; name=x", bytes.NewReader(pdf), int64(len(pdf)))
		require.Equal(t, 200, resp.StatusCode, string(body))

		u = newUpload(t, srv, tok, `{"fileName":"any"}`)
		resp, body = put(t, u.UploadURL, "", bytes.NewReader(pdf), int64(len(pdf)))
		require.Equal(t, 200, resp.StatusCode, string(body), "no declared type: any Content-Type")
	})

	t.Run("empty upload", func(t *testing.T) {
		u := newUpload(t, srv, tok, `{"fileName":"empty.pdf"}`)
		resp, body := put(t, u.UploadURL, "application/pdf", http.NoBody, 0)
		require.Equal(t, 200, resp.StatusCode, string(body))
	})

	t.Run("expiry", func(t *testing.T) {
		u := newUpload(t, srv, tok, `{"fileName":"late.pdf"}`)
		clk.Advance(15*time.Minute - time.Second)
		resp, body := put(t, u.UploadURL, "", bytes.NewReader(pdf), int64(len(pdf)))
		require.Equal(t, 200, resp.StatusCode, string(body))

		u2 := newUpload(t, srv, tok, `{"fileName":"later.pdf"}`)
		clk.Advance(15 * time.Minute)
		resp, body = put(t, u2.UploadURL, "", bytes.NewReader(pdf), int64(len(pdf)))
		requireS3Error(t, resp, body, 403, "AccessDenied")
		// An expired, never uploaded slot stays listed without a URL.
		tok = token(t, srv)
		resp, body = get(t, srv, tok, apiPath("acme", "/A123460/attachments/"+u2.GUID))
		var a qubs.Attachment
		requireJSON(t, resp, body, 200, &a)
		assert.Nil(t, a.URL)
	})

	t.Run("forged tokens", func(t *testing.T) {
		u := newUpload(t, srv, tok, `{"fileName":"x.pdf"}`)
		tokPart := u.UploadURL[strings.LastIndex(u.UploadURL, "/")+1:]
		// One character of the signature changed: not the last, whose
		// low bits base64 may leave unused (so that "AA" in the place of
		// the last two decoded the same bytes now and then).
		i := len(tokPart) - 3
		c := byte('A')
		if tokPart[i] == c {
			c = 'B'
		}
		forged := tokPart[:i] + string(c) + tokPart[i+1:]
		resp, body := put(t, srv.URL+"/presigned/upload/"+forged, "", bytes.NewReader(pdf), int64(len(pdf)))
		requireS3Error(t, resp, body, 403, "SignatureDoesNotMatch")
		// An upload token is no download token.
		resp, body = get(t, srv, "", srv.URL+"/presigned/download/"+tokPart)
		requireS3Error(t, resp, body, 403, "SignatureDoesNotMatch")
		// Wrong method on a presigned URL.
		resp, body = call{method: http.MethodPost, path: u.UploadURL, body: "x"}.do(t, srv)
		requireProblem(t, resp, body, 405)
	})
}

// TestUploadSecondPut: what a second PUT to a used URL answers is a
// setting, since QUBS does not document it; each keeps the first content
// unless the store overwrites.
func TestUploadSecondPut(t *testing.T) {
	first, second := []byte("%PDF-1.4 first"), []byte("%PDF-1.4 second, longer")
	for _, tc := range []struct {
		used   qubssim.UsedUploadURL
		status int
		code   string
		want   []byte
		puts   int
	}{
		{qubssim.UsedUploadConflict, 409, "UploadAlreadyCompleted", first, 1},
		{qubssim.UsedUploadOverwrite, 200, "", second, 2},
		{qubssim.UsedUploadForbidden, 403, "AccessDenied", first, 1},
	} {
		t.Run(tc.used.String(), func(t *testing.T) {
			srv := start(t, qubssim.Options{Clock: qubssim.NewFakeClock(t0), UsedUploadURL: tc.used})
			tok := token(t, srv)
			u := newUpload(t, srv, tok, `{"fileName":"r.pdf","contentType":"application/pdf"}`)
			resp, body := put(t, u.UploadURL, "application/pdf", bytes.NewReader(first), int64(len(first)))
			require.Equal(t, 200, resp.StatusCode, string(body))
			resp, body = put(t, u.UploadURL, "application/pdf", bytes.NewReader(second), int64(len(second)))
			if tc.code == "" {
				require.Equal(t, tc.status, resp.StatusCode, string(body))
			} else {
				requireS3Error(t, resp, body, tc.status, tc.code)
			}
			recs := srv.Uploads("acme", "A123460")
			rec := recs[len(recs)-1]
			assert.Equal(t, tc.want, rec.Bytes)
			assert.Equal(t, tc.puts, rec.Puts)
			assert.Equal(t, int64(len(tc.want)), rec.Size)
		})
	}
	for _, s := range []string{"conflict", "409", "overwrite", "200", "forbidden", "403", ""} {
		_, err := qubssim.ParseUsedUploadURL(s)
		assert.NoError(t, err, s)
	}
	_, err := qubssim.ParseUsedUploadURL("maybe")
	assert.Error(t, err)
}
