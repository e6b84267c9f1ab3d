package convert

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// outputSet writes a group of files into one directory all or nothing:
// each file is written to a temporary name beside its destination and
// renamed into place only when every file is complete. abort removes
// whatever was written, including files already renamed, so a failed
// build leaves no partial model behind.
type outputSet struct {
	dir string
	// keystone is the file renamed last (the model): when it exists,
	// the files it needs do too.
	keystone string
	pending  []pendingFile
	placed   []string
}

type pendingFile struct{ tmp, final string }

// create opens a temporary file that commit will rename to dir/name.
func (o *outputSet) create(name string) (*os.File, error) {
	f, err := os.CreateTemp(o.dir, "."+name+".tmp*")
	if err != nil {
		return nil, err
	}
	// CreateTemp makes the file private (0600); the outputs are ordinary
	// files.
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	o.pending = append(o.pending, pendingFile{tmp: f.Name(), final: filepath.Join(o.dir, name)})
	return f, nil
}

// writeFile writes data to a temporary file for dir/name.
func (o *outputSet) writeFile(name string, data []byte) error {
	f, err := o.create(name)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	return closeAfter(f, err)
}

// copyFile copies src to a temporary file for dir/name.
func (o *outputSet) copyFile(name, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	f, err := o.create(name)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, in)
	return closeAfter(f, err)
}

// closeAfter closes f and returns the first error, so that a failed
// close (the last chance to see a full disk) is not lost.
func closeAfter(f *os.File, err error) error {
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// commit renames every file into place, the keystone last.
func (o *outputSet) commit() error {
	keystone := filepath.Join(o.dir, o.keystone)
	for _, last := range []bool{false, true} {
		var rest []pendingFile
		for _, p := range o.pending {
			if (p.final == keystone) != last {
				rest = append(rest, p)
				continue
			}
			if err := os.Rename(p.tmp, p.final); err != nil {
				return err
			}
			o.placed = append(o.placed, p.final)
		}
		o.pending = rest
	}
	return nil
}

// abort removes the temporary files and any already renamed.
func (o *outputSet) abort() {
	for _, p := range o.pending {
		os.Remove(p.tmp)
	}
	for _, f := range o.placed {
		os.Remove(f)
	}
	o.pending, o.placed = nil, nil
}

// checkOutputDir reports a missing or non-directory destination early,
// with a clear message, before any work is done.
func checkOutputDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("output directory %s does not exist", dir)
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("output directory %s is not a directory", dir)
	}
	return nil
}
