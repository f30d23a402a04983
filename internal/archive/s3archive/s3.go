// Package s3archive stores archived messages as objects in one Amazon S3
// bucket (or an S3-compatible store); it implements archive.Archive for AWS
// mode. It uses aws-sdk-go-v2's service/s3 and its transfer manager
// (feature/s3/transfermanager, the successor of the deprecated
// feature/s3/manager uploader).
//
// A key such as "box/2024/05/17/abc.eml" names the object
// <Prefix>/box/2024/05/17/abc.eml in Options.Bucket.
//
// Guarantees, beyond those of package archive:
//   - Put streams r and computes its SHA-256 while reading. A message
//     shorter than MultipartThreshold is buffered (at most that many bytes)
//     and sent with exactly one PutObject request (more only when the SDK
//     retries a transient failure), which carries the digest
//     as x-amz-checksum-sha256, so S3 itself rejects a body that differs
//     from what was read, and as x-amz-meta-sha256.
//   - A longer message goes as a streamed multipart upload
//     (CreateMultipartUpload, UploadPart per PartSize bytes, at most
//     Concurrency parts in flight, CompleteMultipartUpload). The object
//     appears only at CompleteMultipartUpload, whole. On any failure (reader
//     error, cancelled context, failed request) the upload is aborted with
//     AbortMultipartUpload, on a fresh context bounded by FailTimeout so a
//     cancelled ctx does not leave parts behind.
//   - Cancelling ctx stops reading r at once. Requests already sent are
//     not cut at once but given up to FailTimeout more to finish, and the
//     abort waits for them: a part upload that the client gave up on but
//     the server was still storing can otherwise outlive the abort (S3
//     documents that in-progress part uploads "might or might not succeed"
//     after an abort; versitygw shows it). So Put returns at most about
//     2 x FailTimeout after ctx is done, with an error wrapping ctx.Err().
//   - The digest of a multipart message is known only after its last byte,
//     but S3 fixes metadata at CreateMultipartUpload. Put therefore copies
//     the completed object onto itself (CopyObject, MetadataDirective
//     REPLACE, x-amz-copy-source-if-match on the ETag just completed) to add
//     x-amz-meta-sha256. If another Put replaced the key in between, the
//     copy's precondition fails and Put leaves the newer object alone: last
//     writer wins, as with any replace. Cost: one extra request and one
//     server-side copy, only for messages of MultipartThreshold bytes or
//     more. Each part carries the SDK's default CRC32 checksum, which S3
//     verifies; the object's checksum is then a composite one, not the
//     message's SHA-256.
//   - Every object carries user metadata mailbox, uidl, message-id (when
//     known) and sha256 (hex), and Content-Type message/rfc822. Values are
//     percent-encoded where they hold bytes outside printable ASCII (and
//     '%' itself), and truncated to stay well inside S3's 2 KB metadata
//     limit; a message with an absurd Message-ID still archives. Metadata
//     never holds a secret.
//   - Every write asks for server-side encryption (Options.SSE, AES256 by
//     default, or aws:kms with an optional key id).
//   - Memory per Put is bounded by the part size, whatever the message
//     size: below the threshold at most 2 x MultipartThreshold transiently
//     (reading into a right-sized buffer), then 1 x; for a multipart upload
//     (Concurrency + 2) x PartSize of part buffers (the first part, plus the
//     transfer manager's pool of Concurrency + 1), i.e. 32 MiB with the
//     defaults (8 MiB parts, concurrency 2), chosen for a 128 MB Lambda.
//     BenchmarkPut measures the peak heap growth of one Put, garbage
//     included: under 1 MiB for 100 KiB, about 40 MiB for 20 MiB and for
//     150 MiB alike.
//   - Open streams the object (GetObject); a missing key gives an error
//     wrapping archive.ErrNotFound. The reader fails once ctx is done.
//   - The Archive is an archive.Stager (spool.go): Stage copies a message
//     into a local file, Commit uploads it with Put, and the file is kept
//     (Options.SpoolFiles, SpoolBytes) so that Open of a key committed
//     lately reads the local copy instead of S3.
//
// What it cannot do: a crash (or kill) of the process during a multipart
// upload leaves its parts on S3 until a bucket lifecycle rule
// (AbortIncompleteMultipartUpload) removes them, as can a
// CreateMultipartUpload whose answer is lost; configure one. A failure
// between CompleteMultipartUpload and the metadata copy leaves the whole,
// correct object without x-amz-meta-sha256 and Put reports the error (a
// retried Put replaces it). The in-place copy limits multipart objects to
// S3's 5 GiB CopyObject limit; larger objects are stored without the sha256
// metadata. Versioned buckets keep the pre-copy version as a noncurrent
// version. Stores that ignore SSE headers (versitygw) store unencrypted.
// The transfer manager (v0.5.4) writes one line to the standard logger when
// CompleteMultipartUpload fails ("failed to complete multipart upload for
// upload ID ..."; no secret); the same failure is also returned.
package s3archive

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	tmtypes "github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/popconnector/popconnector/internal/archive"
)

const (
	// DefaultPartSize is the multipart part size (and default threshold).
	DefaultPartSize = 8 << 20
	// MinPartSize is S3's smallest part size for every part but the last.
	MinPartSize = 5 << 20
	// DefaultConcurrency is how many parts are uploaded at once by default;
	// small because Lambda may have only 128 MB.
	DefaultConcurrency = 2
	// DefaultFailTimeout bounds how long requests in flight may run on
	// after ctx is done, and the AbortMultipartUpload sent after a failure.
	DefaultFailTimeout = 10 * time.Second

	// DefaultSpoolFiles and DefaultSpoolBytes bound the committed copies
	// the spool keeps for Open: enough for the messages a poll has between
	// archive and delivery, well inside Lambda's default 512 MB of /tmp.
	DefaultSpoolFiles = 64
	DefaultSpoolBytes = 128 << 20

	// maxCopySize is S3's largest CopyObject source.
	maxCopySize = 5 << 30
	// maxKeyLen is S3's longest object key, in bytes.
	maxKeyLen = 1024

	contentType = "message/rfc822"

	// Metadata names (sent as x-amz-meta-<name>).
	MetaMailbox   = "mailbox"
	MetaUIDL      = "uidl"
	MetaMessageID = "message-id"
	MetaSHA256    = "sha256"
)

// Caps on encoded metadata values. With the names and a 64-byte digest they
// total under 1.7 KB, inside S3's 2 KB limit for all user metadata.
var metaCaps = map[string]int{
	MetaMailbox:   320,
	MetaUIDL:      256, // RFC 1939 allows 70; room for encoding
	MetaMessageID: 1024,
}

// Options configures an Archive.
type Options struct {
	// Bucket holds the objects. Required.
	Bucket string
	// Prefix, when set, is prepended with a "/" to every key; leading and
	// trailing slashes are ignored.
	Prefix string
	// SSE is the server-side encryption asked for: "AES256" (SSE-S3, the
	// default when empty) or "aws:kms" (SSE-KMS).
	SSE string
	// KMSKeyID is the KMS key for SSE "aws:kms"; empty means the account's
	// AWS managed key. Not allowed with other SSE values.
	KMSKeyID string
	// PartSize is the multipart part size in bytes; 0 means
	// DefaultPartSize, otherwise at least MinPartSize.
	PartSize int64
	// MultipartThreshold is the size from which a message is uploaded in
	// parts; 0 means PartSize. At most PartSize, so a single PUT never
	// buffers more than a part.
	MultipartThreshold int64
	// Concurrency is how many parts are in flight at once; 0 means
	// DefaultConcurrency.
	Concurrency int
	// FailTimeout bounds how long requests in flight may go on once ctx is
	// done, and (separately) the abort of a failed multipart upload, which
	// runs on a fresh context; 0 means DefaultFailTimeout.
	FailTimeout time.Duration
	// SpoolDir is where Stage keeps messages until Commit uploads them,
	// and Open finds the ones committed lately (spool.go); "" means the
	// system's temporary directory (/tmp on Lambda).
	SpoolDir string
	// SpoolFiles and SpoolBytes bound the committed copies kept for Open:
	// 0 means DefaultSpoolFiles and DefaultSpoolBytes.
	SpoolFiles int
	SpoolBytes int64
}

// withDefaults fills zero values and checks the result.
func (o Options) withDefaults() (Options, error) {
	if o.Bucket == "" {
		return o, errors.New("s3archive: no bucket given")
	}
	o.Prefix = strings.Trim(o.Prefix, "/")
	if o.Prefix != "" {
		if err := validateKey(o.Prefix); err != nil {
			return o, fmt.Errorf("s3archive: prefix: %w", err)
		}
	}
	switch o.SSE {
	case "":
		o.SSE = string(types.ServerSideEncryptionAes256)
	case string(types.ServerSideEncryptionAes256), string(types.ServerSideEncryptionAwsKms):
	default:
		return o, fmt.Errorf("s3archive: unsupported SSE %q (want %q or %q)", o.SSE, types.ServerSideEncryptionAes256, types.ServerSideEncryptionAwsKms)
	}
	if o.KMSKeyID != "" && o.SSE != string(types.ServerSideEncryptionAwsKms) {
		return o, fmt.Errorf("s3archive: a KMS key id needs SSE %q, not %q", types.ServerSideEncryptionAwsKms, o.SSE)
	}
	switch {
	case o.PartSize == 0:
		o.PartSize = DefaultPartSize
	case o.PartSize < MinPartSize:
		return o, fmt.Errorf("s3archive: part size %d is below S3's minimum of %d bytes", o.PartSize, MinPartSize)
	}
	switch {
	case o.MultipartThreshold == 0:
		o.MultipartThreshold = o.PartSize
	case o.MultipartThreshold < 0 || o.MultipartThreshold > o.PartSize:
		return o, fmt.Errorf("s3archive: multipart threshold %d must be between 1 and the part size %d", o.MultipartThreshold, o.PartSize)
	}
	switch {
	case o.Concurrency == 0:
		o.Concurrency = DefaultConcurrency
	case o.Concurrency < 0:
		return o, fmt.Errorf("s3archive: negative concurrency %d", o.Concurrency)
	}
	switch {
	case o.FailTimeout == 0:
		o.FailTimeout = DefaultFailTimeout
	case o.FailTimeout < 0:
		return o, fmt.Errorf("s3archive: negative fail timeout %v", o.FailTimeout)
	}
	if o.SpoolDir == "" {
		o.SpoolDir = os.TempDir()
	}
	if o.SpoolFiles == 0 {
		o.SpoolFiles = DefaultSpoolFiles
	}
	if o.SpoolBytes == 0 {
		o.SpoolBytes = DefaultSpoolBytes
	}
	if o.SpoolFiles < 0 || o.SpoolBytes < 0 {
		return o, fmt.Errorf("s3archive: negative spool limits (%d files, %d bytes)", o.SpoolFiles, o.SpoolBytes)
	}
	return o, nil
}

// Archive is an S3 bucket (and prefix) of archived messages. It is safe for
// concurrent use.
type Archive struct {
	client *s3.Client
	opts   Options
	tm     *transfermanager.Client
	spool  *spool
	err    error // from Options; every call reports it
}

var _ archive.Archive = (*Archive)(nil)

// New returns an archive writing to opts.Bucket through client. Invalid
// options (see Options and Err) make every Put and Open fail with the reason.
func New(client *s3.Client, opts Options) *Archive {
	o, err := opts.withDefaults()
	a := &Archive{client: client, opts: o, err: err}
	if client == nil && err == nil {
		a.err = errors.New("s3archive: no S3 client given")
	}
	if a.err != nil {
		return a
	}
	a.spool = newSpool(o.SpoolDir, o.SpoolFiles, o.SpoolBytes)
	a.tm = transfermanager.New(client, func(to *transfermanager.Options) {
		to.PartSizeBytes = o.PartSize
		to.MultipartUploadThreshold = o.MultipartThreshold
		to.Concurrency = o.Concurrency
		to.FailTimeout = o.FailTimeout
	})
	return a
}

// Err reports why the options given to New are unusable, or nil.
func (a *Archive) Err() error { return a.err }

// Options returns the options in use, defaults filled in.
func (a *Archive) Options() Options { return a.opts }

// ObjectKey returns the S3 object key that stores key.
func (a *Archive) ObjectKey(key string) string {
	if a.opts.Prefix == "" {
		return key
	}
	return a.opts.Prefix + "/" + key
}

// validateKey accepts what archive.KeyFor makes and refuses keys S3 tools
// would mangle: empty, absolute, "." or ".." or empty segments, control
// characters and backslashes.
func validateKey(key string) error {
	if key == "" {
		return errors.New("empty key")
	}
	if strings.HasPrefix(key, "/") {
		return fmt.Errorf("key %q is absolute", key)
	}
	for _, c := range key {
		if c < 0x20 || c == 0x7f || c == '\\' {
			return fmt.Errorf("key %q holds a control character or backslash", key)
		}
	}
	for seg := range strings.SplitSeq(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("key %q has an empty, \".\" or \"..\" segment", key)
		}
	}
	return nil
}

// checkKey validates key and returns its object key.
func (a *Archive) checkKey(key string) (string, error) {
	if a.err != nil {
		return "", a.err
	}
	if err := validateKey(key); err != nil {
		return "", fmt.Errorf("s3archive: %w", err)
	}
	ok := a.ObjectKey(key)
	if len(ok) > maxKeyLen {
		return "", fmt.Errorf("s3archive: object key for %q is %d bytes, S3 allows %d", key, len(ok), maxKeyLen)
	}
	return ok, nil
}

// Put streams r into key and returns once S3 acknowledged the whole object.
// See the package doc for the requests it makes and what a failure leaves.
func (a *Archive) Put(ctx context.Context, key string, meta archive.Meta, r io.Reader) (archive.Info, error) {
	objKey, err := a.checkKey(key)
	if err != nil {
		return archive.Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return archive.Info{}, a.putErr(objKey, err)
	}
	src := &hashingReader{ctx: ctx, r: r, h: sha256.New()}
	metadata := encodeMeta(meta)
	hooks := &uploadHooks{S3APIClient: a.client, src: src}
	in := &transfermanager.UploadObjectInput{
		Bucket:               aws.String(a.opts.Bucket),
		Key:                  aws.String(objKey),
		Body:                 src,
		ContentType:          aws.String(contentType),
		Metadata:             metadata,
		ServerSideEncryption: tmtypes.ServerSideEncryption(a.opts.SSE),
	}
	if a.opts.KMSKeyID != "" {
		in.SSEKMSKeyID = aws.String(a.opts.KMSKeyID)
	}
	reqCtx, stop := a.requestContext(ctx)
	defer stop()
	out, err := a.tm.UploadObject(reqCtx, in, func(o *transfermanager.Options) { o.S3 = hooks })
	if err != nil {
		return archive.Info{}, a.putErr(objKey, withCtxErr(ctx, err))
	}
	if !src.eof {
		// The transfer manager stops only at EOF; anything else would be a
		// truncated object, which Put must never report as stored.
		return archive.Info{}, a.putErr(objKey, errors.New("upload finished before the message was read to its end"))
	}
	sum := src.h.Sum(nil)
	info := archive.Info{Key: key, Size: src.n, SHA256: hex.EncodeToString(sum)}
	if hooks.multipart && src.n <= maxCopySize {
		if err := a.addDigest(reqCtx, objKey, metadata, out.ETag, sum); err != nil {
			return archive.Info{}, a.putErr(objKey, withCtxErr(ctx, err))
		}
	}
	return info, nil
}

// requestContext returns the context for the requests of one Put: ctx's
// values without its cancellation, cancelled FailTimeout after ctx is done
// (or when stop is called). See the package doc for why.
func (a *Archive) requestContext(ctx context.Context) (context.Context, func()) {
	reqCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	// A timer that fires after stop only cancels an already cancelled
	// context; it is not worth tracking.
	stopAfter := context.AfterFunc(ctx, func() { time.AfterFunc(a.opts.FailTimeout, cancel) })
	return reqCtx, func() {
		stopAfter()
		cancel()
	}
}

// withCtxErr makes err wrap ctx's error when ctx is done, so callers see
// context.Canceled or DeadlineExceeded even when the request that failed
// ran on the detached request context.
func withCtxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%w: %w", cerr, err)
	}
	return err
}

func (a *Archive) putErr(objKey string, err error) error {
	return fmt.Errorf("s3archive: put s3://%s/%s: %w", a.opts.Bucket, objKey, err)
}

// addDigest copies the just-completed multipart object onto itself with
// the sha256 metadata added. See the package doc.
func (a *Archive) addDigest(ctx context.Context, objKey string, metadata map[string]string, etag *string, sum []byte) error {
	md := make(map[string]string, len(metadata)+1)
	for k, v := range metadata {
		md[k] = v
	}
	md[MetaSHA256] = hex.EncodeToString(sum)
	in := &s3.CopyObjectInput{
		Bucket:               aws.String(a.opts.Bucket),
		Key:                  aws.String(objKey),
		CopySource:           aws.String(copySource(a.opts.Bucket, objKey)),
		CopySourceIfMatch:    etag,
		MetadataDirective:    types.MetadataDirectiveReplace,
		Metadata:             md,
		ContentType:          aws.String(contentType),
		ServerSideEncryption: types.ServerSideEncryption(a.opts.SSE),
		// No x-amz-checksum-algorithm: the parts' checksums were verified
		// on upload, and versitygw v1.8.0 stores the SHA-256 of empty
		// input for an in-place copy that asks for one, which would make
		// every later checksum-validating GetObject fail.
	}
	if a.opts.KMSKeyID != "" {
		in.SSEKMSKeyId = aws.String(a.opts.KMSKeyID)
	}
	if _, err := a.client.CopyObject(ctx, in); err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) && ae.ErrorCode() == "PreconditionFailed" {
			// Another Put replaced the object after ours completed; ours was
			// durable, and the newer object stands (last writer wins).
			return nil
		}
		return fmt.Errorf("adding sha256 metadata (in-place copy): %w", err)
	}
	return nil
}

// copySource is the x-amz-copy-source value: bucket/key with every byte
// outside RFC 3986's unreserved set (and "/") percent-encoded.
func copySource(bucket, key string) string {
	var b strings.Builder
	const hexDigits = "0123456789ABCDEF"
	for _, c := range []byte(bucket + "/" + key) {
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~/", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}

// uploadHooks sees the transfer manager's requests for one Put: it records
// whether the upload went multipart, and completes a single PutObject with
// the digest, which is final by then (the transfer manager issues a single
// PutObject only after reading the body to EOF below the threshold).
type uploadHooks struct {
	transfermanager.S3APIClient
	src       *hashingReader
	multipart bool // only touched from the goroutine that calls UploadObject
}

func (h *uploadHooks) PutObject(ctx context.Context, in *s3.PutObjectInput, opts ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	if !h.src.eof {
		return nil, errors.New("s3archive: single PutObject before the message was read to its end")
	}
	sum := h.src.h.Sum(nil)
	md := make(map[string]string, len(in.Metadata)+1)
	for k, v := range in.Metadata {
		md[k] = v
	}
	md[MetaSHA256] = hex.EncodeToString(sum)
	in.Metadata = md
	// S3 verifies the body against this and refuses a mismatch.
	in.ChecksumAlgorithm = types.ChecksumAlgorithmSha256
	in.ChecksumCRC32 = nil
	in.ChecksumSHA256 = aws.String(base64.StdEncoding.EncodeToString(sum))
	in.ContentLength = aws.Int64(h.src.n)
	return h.S3APIClient.PutObject(ctx, in, opts...)
}

func (h *uploadHooks) CreateMultipartUpload(ctx context.Context, in *s3.CreateMultipartUploadInput, opts ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error) {
	h.multipart = true
	return h.S3APIClient.CreateMultipartUpload(ctx, in, opts...)
}

// hashingReader hashes and counts what it passes on, and stops once ctx is
// done. The transfer manager reads it from one goroutine.
type hashingReader struct {
	ctx context.Context
	r   io.Reader
	h   hash.Hash
	n   int64
	eof bool
}

func (s *hashingReader) Read(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := s.r.Read(p)
	if n > 0 {
		s.h.Write(p[:n])
		s.n += int64(n)
	}
	switch {
	case err == io.EOF:
		s.eof = true
	case err != nil:
		err = fmt.Errorf("reading message: %w", err)
	}
	return n, err
}

// encodeMeta turns m into S3 user metadata, leaving out empty values.
func encodeMeta(m archive.Meta) map[string]string {
	md := make(map[string]string, 4)
	for name, v := range map[string]string{MetaMailbox: m.Mailbox, MetaUIDL: m.UIDL, MetaMessageID: m.MessageID} {
		if v != "" {
			md[name] = encodeMetaValue(v, metaCaps[name])
		}
	}
	return md
}

// encodeMetaValue keeps printable ASCII except '%' and space, percent-encodes
// every other byte (so a header can never be split or folded, and UTF-8
// survives as %XX), and cuts the result to at most max bytes without
// splitting an escape.
func encodeMetaValue(v string, max int) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c > 0x20 && c < 0x7f && c != '%' {
			if b.Len()+1 > max {
				break
			}
			b.WriteByte(c)
			continue
		}
		if b.Len()+3 > max {
			break
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}

// DecodeMetaValue reverses the percent-encoding of a metadata value (of a
// truncated value, it returns the part that was kept).
func DecodeMetaValue(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '%' && i+2 < len(v) {
			if x, err := hex.DecodeString(v[i+1 : i+3]); err == nil {
				b.WriteByte(x[0])
				i += 2
				continue
			}
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

// Open streams the stored bytes of key back. A key with no stored object
// gives an error wrapping archive.ErrNotFound. The reader fails once ctx is
// done; the caller must Close it.
func (a *Archive) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	objKey, err := a.checkKey(key)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("s3archive: open s3://%s/%s: %w", a.opts.Bucket, objKey, err)
	}
	if rc, ok := a.spool.open(ctx, key); ok {
		return rc, nil
	}
	out, err := a.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(a.opts.Bucket), Key: aws.String(objKey)})
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("%w: s3://%s/%s", archive.ErrNotFound, a.opts.Bucket, objKey)
		}
		return nil, fmt.Errorf("s3archive: open s3://%s/%s: %w", a.opts.Bucket, objKey, err)
	}
	return out.Body, nil
}

// isNotFound reports S3's answer for a missing key. A missing bucket is a
// configuration error, not a missing message, and is not matched.
func isNotFound(err error) bool {
	var nsk *types.NoSuchKey
	if errors.As(err, &nsk) {
		return true
	}
	var ae smithy.APIError
	return errors.As(err, &ae) && (ae.ErrorCode() == "NoSuchKey" || ae.ErrorCode() == "NotFound")
}
