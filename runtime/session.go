package runtime

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// ErrClosed is returned by Run on a closed Session.
var ErrClosed = errors.New("runtime: session is closed")

// Session is a loaded model. Run may be called from several goroutines at
// once; Close must not overlap with Run.
type Session struct {
	source  string // model path, or "<memory>", for error messages
	ds      *ort.DynamicAdvancedSession
	inputs  []IOInfo
	outputs []IOInfo // as the model declares them
	inIdx   map[string]int
	outIdx  map[string]int
	fetch   []fetchPlan // what the onnxruntime session fetches, in order
	fetchOf map[string]int

	mu     sync.RWMutex // Run holds it shared, Close exclusively
	closed bool
}

// fetchPlan says how one output gets from onnxruntime to a Tensor.
type fetchPlan struct {
	out     IOInfo // the model's declaration
	ortName string // name in the onnxruntime session
	// mode picks the allocation: onnxruntime_go auto-allocates outputs, but
	// that path breaks for FLOAT16/BFLOAT16 (it copies as many bytes as
	// there are elements, half the data, and then fails) and for rank-0
	// outputs (it rejects an empty shape), so those are preallocated when
	// their shape is static or else cast to FLOAT inside the graph (see
	// appendCasts).
	mode fetchMode
	// narrow is Float16 or BFloat16 when ortName is our Cast-to-FLOAT of the
	// model's output, to be converted back after the run.
	narrow DType
}

type fetchMode int

const (
	fetchAuto     fetchMode = iota // onnxruntime_go allocates
	fetchPrealloc                  // CustomDataTensor of the static shape
	fetchScalar                    // typed Scalar
)

// castSuffix names the FLOAT copies of FLOAT16/BFLOAT16 outputs that we add
// to the graph. It is chosen not to collide with exporter-generated names.
const castSuffix = "__onnxprune_float32"

// NewSession loads the ONNX model at modelPath. External data is resolved
// relative to the model's directory (or opts.ExternalDataDir).
func NewSession(modelPath string, opts Options) (*Session, error) {
	if !Initialized() {
		return nil, fmt.Errorf("runtime: %s: onnxruntime not initialised (call runtime.Init first)", modelPath)
	}
	info, err := scanModelFile(modelPath)
	if err != nil {
		return nil, fmt.Errorf("runtime: %s: %w", modelPath, err)
	}
	s, err := newSession(modelPath, info, opts, modelSource{path: modelPath})
	if err != nil {
		return nil, wrapSessionError(modelPath, err)
	}
	return s, nil
}

// NewSessionFromBytes loads a serialized ModelProto held in memory (e.g. a
// graph just rewritten). If its initializers use external data, set
// opts.ExternalDataDir to the directory their locations are relative to.
// data may be reused once NewSessionFromBytes returns.
func NewSessionFromBytes(data []byte, opts Options) (*Session, error) {
	const source = "<memory>"
	if !Initialized() {
		return nil, fmt.Errorf("runtime: %s: onnxruntime not initialised (call runtime.Init first)", source)
	}
	info, err := scanModel(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, fmt.Errorf("runtime: %s: %w", source, err)
	}
	if info.externalData && opts.ExternalDataDir == "" {
		return nil, fmt.Errorf("runtime: %s: model has external data: set Options.ExternalDataDir to the directory its locations are relative to", source)
	}
	s, err := newSession(source, info, opts, modelSource{data: data})
	if err != nil {
		return nil, wrapSessionError(source, err)
	}
	return s, nil
}

// wrapSessionError adds the model to an error, except for the CUDA error,
// which is about the installation, not the model.
func wrapSessionError(source string, err error) error {
	if errors.Is(err, ErrCUDAUnavailable) {
		return err
	}
	return fmt.Errorf("runtime: %s: %w", source, err)
}

// modelSource is a model file or serialized model bytes.
type modelSource struct {
	path string
	data []byte
}

func newSession(source string, info *modelInfo, opts Options, src modelSource) (*Session, error) {
	s := &Session{
		source:  source,
		inputs:  info.inputs,
		outputs: info.outputs,
		inIdx:   map[string]int{},
		outIdx:  map[string]int{},
		fetchOf: map[string]int{},
	}
	for i, in := range s.inputs {
		s.inIdx[in.Name] = i
	}
	for i, out := range s.outputs {
		s.outIdx[out.Name] = i
	}
	if len(s.inputs) == 0 {
		// onnxruntime_go's Run indexes the first input unconditionally.
		return nil, errors.New("models without inputs are not supported")
	}

	wanted := opts.Outputs
	if len(wanted) == 0 {
		for _, out := range s.outputs {
			if out.DType.Size() > 0 {
				wanted = append(wanted, out.Name)
			}
		}
	}
	var casts []IOInfo
	for _, name := range wanted {
		i, ok := s.outIdx[name]
		if !ok {
			return nil, fmt.Errorf("Options.Outputs: unknown output %q; outputs are: %s", name, names(s.outputs))
		}
		if _, dup := s.fetchOf[name]; dup {
			continue
		}
		p, err := planFetch(s.outputs[i])
		if err != nil {
			return nil, err
		}
		if p.narrow != Undefined {
			casts = append(casts, s.outputs[i])
		}
		s.fetchOf[name] = len(s.fetch)
		s.fetch = append(s.fetch, p)
	}
	if len(s.fetch) == 0 {
		return nil, errors.New("model has no tensor outputs this package can fetch")
	}

	inNames := make([]string, len(s.inputs))
	for i, in := range s.inputs {
		inNames[i] = in.Name
	}
	fetchNames := make([]string, len(s.fetch))
	for i, p := range s.fetch {
		fetchNames[i] = p.ortName
	}

	// onnxruntime loads the file itself when it can (external data then
	// resolves next to it); otherwise it gets bytes plus the directory.
	data, externalDir := src.data, opts.ExternalDataDir
	if src.path != "" && (len(casts) > 0 || (externalDir != "" && externalDir != filepath.Dir(src.path))) {
		var err error
		if data, err = os.ReadFile(src.path); err != nil {
			return nil, err
		}
		if externalDir == "" {
			externalDir = filepath.Dir(src.path)
		}
	}
	create := func(data []byte, in, fetch []string, optimizedPath string) (*ort.DynamicAdvancedSession, error) {
		dir := ""
		if data != nil {
			dir = externalDir
		}
		so, err := opts.sessionOptions(dir, optimizedPath)
		if err != nil {
			return nil, err
		}
		defer so.Destroy()
		var ds *ort.DynamicAdvancedSession
		if data == nil {
			ds, err = ort.NewDynamicAdvancedSession(src.path, in, fetch, so)
		} else {
			ds, err = ort.NewDynamicAdvancedSessionWithONNXData(data, in, fetch, so)
		}
		if err != nil {
			return nil, fmt.Errorf("creating onnxruntime session: %w", err)
		}
		return ds, nil
	}

	optimizedPath := opts.OptimizedModelPath
	if len(casts) > 0 {
		if optimizedPath != "" {
			// The optimized model the caller asked for must not contain our
			// Casts, so a throwaway session on the unmodified model writes
			// it. (A second load, only with both features at once.)
			tmp, err := create(data, nil, nil, optimizedPath)
			if err != nil {
				return nil, fmt.Errorf("writing optimized model: %w", err)
			}
			tmp.Destroy()
			optimizedPath = ""
		}
		var err error
		if data, err = appendCasts(data, casts); err != nil {
			return nil, err
		}
	}
	ds, err := create(data, inNames, fetchNames, optimizedPath)
	if err != nil {
		return nil, err
	}
	s.ds = ds
	return s, nil
}

func planFetch(out IOInfo) (fetchPlan, error) {
	p := fetchPlan{out: out, ortName: out.Name}
	switch {
	case out.DType == Float16 || out.DType == BFloat16:
		if out.Static() && len(out.Shape) > 0 && numElements(out.Shape) > 0 {
			p.mode = fetchPrealloc
			return p, nil
		}
		// Shape unknown until the run: fetch a FLOAT copy instead.
		p.ortName = out.Name + castSuffix
		p.narrow = out.DType
		if out.Shape != nil && len(out.Shape) == 0 {
			p.mode = fetchScalar
		}
		return p, nil
	case out.DType.Size() == 0:
		return p, fmt.Errorf("output %s: element type %s is not supported", out.Name, out.DType)
	case out.Shape != nil && len(out.Shape) == 0:
		if !scalarKind(out.DType) {
			return p, fmt.Errorf("output %s: rank-0 %s outputs are not supported", out.Name, out.DType)
		}
		p.mode = fetchScalar
	}
	return p, nil
}

// appendCasts returns model bytes whose graph additionally computes
// Cast(x, to=FLOAT) for each output x as a new graph output x+castSuffix.
//
// Protobuf parsing merges repeated occurrences of a message field, and
// appends repeated fields, so appending a second ModelProto.graph holding
// just the new nodes and outputs extends the existing graph without decoding
// (or copying weights out of) the original.
func appendCasts(model []byte, outs []IOInfo) ([]byte, error) {
	g := &onnxpb.GraphProto{}
	for _, out := range outs {
		name := out.Name + castSuffix
		g.Node = append(g.Node, &onnxpb.NodeProto{
			Name:   proto.String("onnxprune_cast_" + out.Name),
			OpType: proto.String("Cast"),
			Input:  []string{out.Name},
			Output: []string{name},
			Attribute: []*onnxpb.AttributeProto{{
				Name: proto.String("to"),
				Type: onnxpb.AttributeProto_INT.Enum(),
				I:    proto.Int64(int64(Float)),
			}},
		})
		g.Output = append(g.Output, &onnxpb.ValueInfoProto{
			Name: proto.String(name),
			Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
				TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(Float))},
			}},
		})
	}
	frag, err := proto.Marshal(g)
	if err != nil {
		return nil, fmt.Errorf("encoding output casts: %w", err)
	}
	out := make([]byte, 0, len(model)+len(frag)+16)
	out = append(out, model...)
	out = protowire.AppendTag(out, fieldModelGraph, protowire.BytesType)
	return protowire.AppendBytes(out, frag), nil
}

// Inputs returns the inputs Run needs, in model order.
func (s *Session) Inputs() []IOInfo { return cloneInfos(s.inputs) }

// Outputs returns the model's outputs, in model order.
func (s *Session) Outputs() []IOInfo { return cloneInfos(s.outputs) }

// Close releases onnxruntime's session. It is safe to call more than once.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.ds.Destroy(); err != nil {
		return fmt.Errorf("runtime: %s: close: %w", s.source, err)
	}
	return nil
}

// Run feeds every input (by name) and returns the named outputs; no names
// means all outputs the session fetches. The returned tensors are owned by
// the caller.
func (s *Session) Run(inputs map[string]*Tensor, outputNames []string) (map[string]*Tensor, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	out, err := s.run(inputs, outputNames)
	if err != nil {
		return nil, fmt.Errorf("runtime: %s: %w", s.source, err)
	}
	return out, nil
}

func (s *Session) run(inputs map[string]*Tensor, outputNames []string) (map[string]*Tensor, error) {
	if err := s.checkInputs(inputs); err != nil {
		return nil, err
	}
	want, err := s.resolveOutputs(outputNames)
	if err != nil {
		return nil, err
	}

	in := make([]ort.Value, len(s.inputs))
	defer destroyAll(in)
	for i, info := range s.inputs {
		v, err := toOrtValue(inputs[info.Name])
		if err != nil {
			return nil, fmt.Errorf("input %s: %w", info.Name, err)
		}
		in[i] = v
	}
	out := make([]ort.Value, len(s.fetch))
	defer destroyAll(out)
	for i, p := range s.fetch {
		v, err := p.prealloc()
		if err != nil {
			return nil, fmt.Errorf("output %s: %w", p.out.Name, err)
		}
		out[i] = v
	}

	err = s.ds.Run(in, out)
	// The inputs' Go memory was lent to onnxruntime by pointer.
	runtime.KeepAlive(inputs)
	if err != nil {
		for i, p := range s.fetch {
			if p.mode == fetchAuto && out[i] != nil && reflect.ValueOf(out[i]).IsNil() {
				return nil, fmt.Errorf("output %s: the model does not declare its shape and it is a scalar, which onnxruntime_go v1.27 cannot return: declare the output's shape as [] (rank 0)", p.out.Name)
			}
		}
		return nil, err
	}

	result := make(map[string]*Tensor, len(want))
	for _, i := range want {
		p := s.fetch[i]
		t, err := fromOrtValue(out[i])
		if err != nil {
			return nil, fmt.Errorf("output %s: %w", p.out.Name, err)
		}
		if p.narrow != Undefined {
			if t, err = narrowFloat(t, p.narrow); err != nil {
				return nil, fmt.Errorf("output %s: %w", p.out.Name, err)
			}
		}
		result[p.out.Name] = t
	}
	return result, nil
}

func (p fetchPlan) prealloc() (ort.Value, error) {
	switch p.mode {
	case fetchPrealloc:
		n := numElements(p.out.Shape) * int64(p.out.DType.Size())
		return ort.NewCustomDataTensor(ort.NewShape(p.out.Shape...), alignedBytes(int(n)), ort.TensorElementDataType(p.out.DType))
	case fetchScalar:
		d := p.out.DType
		if p.narrow != Undefined {
			d = Float
		}
		return emptyScalar(d)
	}
	return nil, nil // onnxruntime_go allocates
}

func (s *Session) checkInputs(inputs map[string]*Tensor) error {
	var unknown, missing []string
	for name := range inputs {
		if _, ok := s.inIdx[name]; !ok {
			unknown = append(unknown, strconv.Quote(name))
		}
	}
	for _, in := range s.inputs {
		if _, ok := inputs[in.Name]; !ok {
			missing = append(missing, strconv.Quote(in.Name))
		}
	}
	sort.Strings(unknown)
	switch {
	case len(unknown) > 0:
		return fmt.Errorf("unknown input(s) %s; inputs are: %s", strings.Join(unknown, ", "), names(s.inputs))
	case len(missing) > 0:
		return fmt.Errorf("missing input(s) %s; inputs are: %s", strings.Join(missing, ", "), names(s.inputs))
	}
	for _, in := range s.inputs {
		t := inputs[in.Name]
		if t == nil {
			return fmt.Errorf("input %s is nil", in.Name)
		}
		if in.DType != Undefined && t.DType != in.DType {
			return fmt.Errorf("input %s: got %s, model wants %s", in.Name, t, in)
		}
		if in.Shape != nil && !shapeMatches(t.Shape, in.Shape) {
			return fmt.Errorf("input %s: got shape %v, model wants %s", in.Name, t.Shape, shapeString(in.Shape))
		}
	}
	return nil
}

// shapeMatches reports whether a concrete shape fits a declared one (-1 =
// any size).
func shapeMatches(got, decl []int64) bool {
	if len(got) != len(decl) {
		return false
	}
	for i := range got {
		if decl[i] >= 0 && got[i] != decl[i] {
			return false
		}
	}
	return true
}

// resolveOutputs maps requested names to indices into s.fetch.
func (s *Session) resolveOutputs(outputNames []string) ([]int, error) {
	if len(outputNames) == 0 {
		all := make([]int, len(s.fetch))
		for i := range all {
			all[i] = i
		}
		return all, nil
	}
	var idx []int
	var unknown []string
	for _, name := range outputNames {
		i, ok := s.fetchOf[name]
		switch {
		case ok:
			if !slices.Contains(idx, i) {
				idx = append(idx, i)
			}
		case s.declared(name) && s.outputs[s.outIdx[name]].DType.Size() == 0:
			return nil, fmt.Errorf("output %s: element type %s is not supported", name, s.outputs[s.outIdx[name]].DType)
		case s.declared(name):
			return nil, fmt.Errorf("output %q is not fetched by this session (see Options.Outputs); fetched outputs are: %s", name, s.fetchNames())
		default:
			unknown = append(unknown, strconv.Quote(name))
		}
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("unknown output(s) %s; outputs are: %s", strings.Join(unknown, ", "), names(s.outputs))
	}
	return idx, nil
}

func (s *Session) declared(output string) bool {
	_, ok := s.outIdx[output]
	return ok
}

func (s *Session) fetchNames() string {
	infos := make([]IOInfo, len(s.fetch))
	for i, p := range s.fetch {
		infos[i] = p.out
	}
	return names(infos)
}

// destroyAll releases values, skipping typed nil pointers: onnxruntime_go
// v1.27 leaves one in the output slice when it fails to wrap an
// auto-allocated rank-0 output.
func destroyAll(vs []ort.Value) {
	for _, v := range vs {
		if v != nil && !reflect.ValueOf(v).IsNil() {
			v.Destroy()
		}
	}
}

func names(infos []IOInfo) string {
	if len(infos) == 0 {
		return "(none)"
	}
	parts := make([]string, len(infos))
	for i, in := range infos {
		parts[i] = in.String()
	}
	return strings.Join(parts, ", ")
}

func cloneInfos(in []IOInfo) []IOInfo {
	out := make([]IOInfo, len(in))
	for i, x := range in {
		out[i] = x
		if x.Shape != nil {
			out[i].Shape = append([]int64{}, x.Shape...)
		}
	}
	return out
}
