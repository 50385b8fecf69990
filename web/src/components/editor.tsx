// A JSON editor (CodeMirror 6), loaded on first use so that pages without
// an editor do not download it.
import { useEffect, useRef, useState } from 'preact/hooks';
import type { EditorView } from '@codemirror/view';

const load = () =>
  Promise.all([import('codemirror'), import('@codemirror/state'), import('@codemirror/lang-json')]).then(([cm, state, lang]) => ({
    EditorView: cm.EditorView,
    basicSetup: cm.basicSetup,
    EditorState: state.EditorState,
    json: lang.json,
  }));

export function CodeEditor({ value, onChange, readOnly, height = '420px', label }: { value: string; onChange?: (v: string) => void; readOnly?: boolean; height?: string; label?: string }) {
  const box = useRef<HTMLDivElement>(null);
  const view = useRef<EditorView | null>(null);
  const change = useRef(onChange);
  const latest = useRef(value);
  const [ready, setReady] = useState(false);
  change.current = onChange;
  latest.current = value;

  useEffect(() => {
    let dead = false;
    load().then(({ EditorView, basicSetup, EditorState, json }) => {
      if (dead || !box.current) return;
      view.current = new EditorView({
        parent: box.current,
        state: EditorState.create({
          doc: latest.current,
          extensions: [
            basicSetup,
            json(),
            EditorView.lineWrapping,
            EditorState.readOnly.of(!!readOnly),
            EditorView.editable.of(!readOnly),
            EditorView.contentAttributes.of({ 'aria-label': label || 'JSON' }),
            EditorView.theme({
              '&': { height, fontSize: '13px', border: '1px solid var(--border)', borderRadius: '8px', background: '#fff' },
              '&.cm-focused': { outline: '2px solid var(--accent-ring)' },
              '.cm-scroller': { fontFamily: 'var(--mono)', lineHeight: '1.55' },
              '.cm-gutters': { background: '#f8f9fb', border: 'none', color: '#9aa1ad', borderRadius: '8px 0 0 8px' },
            }),
            EditorView.updateListener.of((u) => {
              if (u.docChanged) change.current?.(u.state.doc.toString());
            }),
          ],
        }),
      });
      setReady(true);
    });
    return () => {
      dead = true;
      view.current?.destroy();
      view.current = null;
    };
  }, []);

  useEffect(() => {
    const v = view.current;
    if (v && v.state.doc.toString() !== value) {
      v.dispatch({ changes: { from: 0, to: v.state.doc.length, insert: value } });
    }
  }, [value, ready]);

  return (
    <div ref={box} class="editor" data-testid="json-editor" data-ready={ready ? '1' : undefined}>
      {!ready && <pre class="editor-fallback">{value}</pre>}
    </div>
  );
}
