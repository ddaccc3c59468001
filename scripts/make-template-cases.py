#!/usr/bin/env python3
"""Chat-template cases rendered by jinja2 exactly as Hugging Face transformers renders them.

Writes tests/fixtures/templates/cases.json: for each case the template (a file in that folder or
inline text), the context the template gets (messages, tools, documents, add_generation_prompt,
special tokens, extra variables), the pinned time strftime_now formats, and what jinja2 gave: the
rendered text, or the error (`raise_exception`'s message, or another jinja2 failure).
tests/templates.rs renders every case with tinfer and compares byte for byte.

The environment is copied from transformers' src/transformers/utils/chat_template_utils.py
(`_compile_jinja_template`): ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
extensions=[AssistantTracker, jinja2.ext.loopcontrols]), filter tojson = json.dumps(x,
ensure_ascii=False, indent, separators, sort_keys), globals raise_exception and strftime_now. Its
`render_jinja_template` passes messages, tools (None when absent), documents (None when absent),
add_generation_prompt and the tokenizer's special tokens plus kwargs.

Needs only Python 3 and jinja2 (3.1.6 was used). Run from anywhere: python3 scripts/make-template-cases.py
"""

import datetime
import json
from pathlib import Path

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = Path(__file__).resolve().parent.parent
DIR = ROOT / "tests" / "fixtures" / "templates"
NOW = datetime.datetime(2025, 3, 7, 9, 5, 4, 123)


class AssistantTracker(jinja2.ext.Extension):
    """transformers' {% generation %} tag; with no tracking active it renders its body as is."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_generation_support"), [], [], body).set_lineno(lineno)

    def _generation_support(self, caller):
        return caller()


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(format):
    return NOW.strftime(format)


ENV = ImmutableSandboxedEnvironment(
    trim_blocks=True, lstrip_blocks=True, extensions=[AssistantTracker, jinja2.ext.loopcontrols]
)
ENV.filters["tojson"] = tojson
ENV.globals["raise_exception"] = raise_exception
ENV.globals["strftime_now"] = strftime_now

# ---------------------------------------------------------------------------------------------
# Conversations.

HTML = "Is <b>5 & 6</b> > 4? Say \"yes\" or 'no'."
UNICODE = "Ünïcödé: 日本語のテキスト, emoji 🦀🎉, math ∑x², tab\there, back\\slash"
CHAT = [
    {"role": "user", "content": "Hello! What's the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
    {"role": "user", "content": HTML},
]
SYSTEM = [{"role": "system", "content": "You are a terse assistant. Answer in one line."}] + CHAT
UNICODE_CHAT = [
    {"role": "system", "content": "Réponds en français. ✓"},
    {"role": "user", "content": UNICODE},
    {"role": "assistant", "content": "D'accord — 好的 👍"},
    {"role": "user", "content": "Line one\nline two\r\n\tindented  "},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather for a city & date <today>.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name, e.g. \"Zürich\""},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    "when": {
                        "type": "object",
                        "properties": {"day": {"type": "integer"}, "hour": {"type": "number", "default": 12.0}},
                    },
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the web. Returns up to `n` results.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}, "n": {"type": "integer", "default": 3}, "safe": {"type": "boolean", "default": True}},
                "required": ["query"],
            },
        },
    },
]
ARGS = {"city": "Zürich", "unit": "celsius", "when": {"day": 7, "hour": 9.5}}
TOOL_CHAT = [
    {"role": "system", "content": "You can call tools."},
    {"role": "user", "content": "What's the weather in Zürich right now?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_9f8e7d6c5b", "type": "function", "function": {"name": "get_weather", "arguments": ARGS}}]},
    {"role": "tool", "tool_call_id": "call_9f8e7d6c5b", "name": "get_weather", "content": "{\"temp\": 21.5, \"sky\": \"sunny ☀\"}"},
    {"role": "assistant", "content": "It is 21.5 °C and sunny."},
    {"role": "user", "content": "Thanks! And tomorrow?"},
]
# DeepSeek concatenates arguments as text: give them as a JSON string, as OpenAI's API does.
TOOL_CHAT_STR_ARGS = [
    {**m, "tool_calls": [{**c, "function": {**c["function"], "arguments": json.dumps(c["function"]["arguments"])}} for c in m["tool_calls"]]}
    if "tool_calls" in m else m
    for m in TOOL_CHAT
]
THINK_CHAT = [
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4"},
    {"role": "user", "content": "and 3+3?"},
]
NOT_ALTERNATING = [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]
PARTS = [{"role": "user", "content": [{"type": "text", "text": "Describe "}, {"type": "image"}, {"type": "text", "text": "this."}]}]

CHATML = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}
QWEN = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
LLAMA = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
MISTRAL = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
DEEPSEEK = {"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"}
PHI = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}
KIMI = {"bos_token": "[BOS]", "eos_token": "[EOS]"}


def ctx(messages, tools=None, documents=None, gen=True, tokens=None, **extra):
    """What transformers' render_jinja_template passes: special tokens, kwargs, then its own."""
    c = dict(tokens or {})
    c.update(extra)
    c.update(messages=messages, tools=tools, documents=documents, add_generation_prompt=gen)
    return c


REAL = {
    "HuggingFaceTB-SmolLM2-135M-Instruct.jinja": (CHATML, ["chat", "system", "unicode", "no_gen"]),
    "Qwen-Qwen2.5-Coder-0.5B-Instruct.jinja": (QWEN, ["chat", "system", "unicode", "tools", "no_gen", "think"]),
    "meta-llama-Llama-3.2-style.jinja": (LLAMA, ["chat", "system", "unicode", "tools", "tools_sys", "date_kwarg", "empty_tools_error"]),
    "mistralai-Mistral-Small-3.1-24B-Instruct-2503.jinja": (MISTRAL, ["chat", "system", "unicode", "tools", "not_alternating", "parts"]),
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja": (DEEPSEEK, ["chat", "system", "unicode", "tools_str", "think"]),
    # With tools=None passed, `tools is defined` holds and `for tool in tools` fails in jinja2 too.
    "microsoft-Phi-4-mini-instruct.jinja": (PHI, ["chat", "tools", "tools_str"]),
    "moonshotai-Kimi-K2.jinja": (KIMI, ["chat", "system", "unicode", "tools", "parts"]),
    "nvidia-Llama-3_3-Nemotron-Super-49B-v1_5.jinja": (LLAMA, ["chat", "system", "unicode", "tools", "think", "no_think"]),
}


# These real templates loop over a None (Phi-4's `tools` when none are given, Kimi's
# `content` of a tool-calling turn): jinja2 raises TypeError, minijinja loops zero times.
ITERATES_NONE = {("microsoft-Phi-4-mini-instruct.jinja", "chat"), ("moonshotai-Kimi-K2.jinja", "tools")}


def real_cases():
    for file, (tokens, kinds) in REAL.items():
        for kind in kinds:
            c = {
                "chat": lambda: ctx(CHAT, tokens=tokens),
                "system": lambda: ctx(SYSTEM, tokens=tokens),
                "unicode": lambda: ctx(UNICODE_CHAT, tokens=tokens),
                "no_gen": lambda: ctx(SYSTEM, gen=False, tokens=tokens),
                "tools": lambda: ctx(TOOL_CHAT, tools=TOOLS, tokens=tokens),
                "tools_sys": lambda: ctx(TOOL_CHAT, tools=TOOLS, tokens=tokens, tools_in_user_message=False),
                "tools_str": lambda: ctx(TOOL_CHAT_STR_ARGS, tools=TOOLS, tokens=tokens),
                "think": lambda: ctx(THINK_CHAT, tokens=tokens),
                "no_think": lambda: ctx([{"role": "system", "content": "Be brief. /no_think"}] + CHAT, tokens=tokens),
                "date_kwarg": lambda: ctx(CHAT, tokens=tokens, date_string="01 Jan 2030"),
                "empty_tools_error": lambda: ctx([{"role": "system", "content": "sys"}], tools=TOOLS, tokens=tokens),
                "not_alternating": lambda: ctx(NOT_ALTERNATING, tokens=tokens),
                "parts": lambda: ctx(PARTS, tokens=tokens),
            }[kind]()
            case = {"name": f"{file.removesuffix('.jinja')}/{kind}", "template_file": file, "context": c}
            if (file, kind) in ITERATES_NONE:
                case["known_difference"] = True
            yield case


# ---------------------------------------------------------------------------------------------
# The audit: one small template per feature of jinja2 and of the Python methods templates call.

V = {
    "s": "  Hello, World!  ",
    "u": "héllo wörld 🦀 it's a_b-c (x) [y]",
    "csv": "a,b,,c",
    "ws": " a  b\tc\n d ",
    "d": {"zeta": 1, "alpha": [1, 2.5, None, True], "mid": {"k": "v"}, "Beta": "B"},
    "l": [3, 1, 2],
    "names": [{"name": "b", "n": 2}, {"name": "a", "n": 1}, {"name": "c"}],
    "msgs": SYSTEM,
    "f": 2.0,
    "big": 1e20,
    "small": 0.00001,
    "neg": -7,
    "t": True,
    "n": None,
    "html": HTML,
    "lines": "one\ntwo\r\nthree\n",
}
AUDIT = {
    # Printing values: jinja2 prints Python's str().
    "print_scalars": "{{ n }}|{{ t }}|{{ false }}|{{ f }}|{{ big }}|{{ small }}|{{ 1/3 }}|{{ 4/2 }}|{{ 7//2 }}|{{ neg // 2 }}|{{ neg % 3 }}|{{ 2**10 }}|{{ 123456789012345678 }}",
    "print_containers": "{{ l }}|{{ d }}|{{ names[0] }}|{{ ['it\\'s', \"q\\\"\", 'tab\\t', 'é'] }}|{{ {} }}|{{ [] }}|{{ d.items()|list|length }}",
    "print_undefined": "[{{ nope }}][{{ d.nope }}][{{ d['nope'] }}]",
    "string_filter": "{{ n|string }}|{{ t|string }}|{{ d|string }}|{{ f|string }}",
    "concat_plus": "{{ 'a' + 'b' }}|{{ [1] + [2] }}|{{ 'ab' * 3 }}|{{ 'x' ~ 1 ~ 'y' ~ 2.5 }}",
    # tojson as transformers defines it.
    "tojson_default": "{{ d|tojson }}|{{ html|tojson }}|{{ u|tojson }}|{{ msgs[0]|tojson }}",
    "tojson_indent": "{{ d|tojson(indent=2) }}|{{ l|tojson(indent=4) }}|{{ d|tojson(indent='\\t') }}|{{ {}|tojson(indent=2) }}|{{ [[]]|tojson(indent=0) }}",
    "tojson_options": "{{ d|tojson(sort_keys=true) }}|{{ d|tojson(separators=(',', ':')) }}|{{ u|tojson(ensure_ascii=true) }}|{{ d|tojson(indent=1, separators=(', ', ' = ')) }}",
    "tojson_numbers": "{{ [1, 1.0, 2.5, 1e16, 1e15, 1e-4, 1e-5, -0.0, 100000000000000000000.0, 0.1 + 0.2]|tojson }}",
    "tojson_control": "{{ '\\x00\\x1b\\u2028\\x7f'|tojson }}|{{ lines|tojson }}",
    "tojson_tools": "{% for t in tools %}{{ t|tojson }}\n{{ t.function.parameters|tojson(indent=4) }}\n{% endfor %}",
    # Python string methods.
    "str_strip": "[{{ s.strip() }}][{{ s.lstrip() }}][{{ s.rstrip() }}][{{ s.strip(' H!') }}][{{ csv.strip('a') }}][{{ 'xxhixx'.rstrip('x') }}][{{ '\\n\\nhi\\n'.lstrip('\\n') }}]",
    "str_split": "{{ csv.split(',') }}|{{ ws.split() }}|{{ ws.split(None, 1) }}|{{ csv.split(',', 1) }}|{{ csv.rsplit(',', 1) }}|{{ ws.rsplit(None, 1) }}|{{ ''.split() }}|{{ ''.split(',') }}",
    "str_case": "{{ u.upper() }}|{{ u.lower() }}|{{ u.title() }}|{{ u.capitalize() }}|{{ u|title }}|{{ u|capitalize }}|{{ u|upper }}|{{ 'ABC'|lower }}",
    "str_find": "{{ u.find('w') }}|{{ u.rfind('o') }}|{{ u.find('zz') }}|{{ u.count('l') }}|{{ 'abc'.count('') }}|{{ u.index('🦀') }}|{{ u.startswith('hé') }}|{{ u.endswith(('x', ']')) }}|{{ u.startswith(('a', 'b')) }}",
    "str_replace": "{{ s.replace('l', 'L') }}|{{ s.replace('l', 'L', 1) }}|{{ 'ab'.replace('', '-') }}|{{ html|replace('&', 'and') }}",
    "str_misc": "{{ lines.splitlines() }}|{{ lines.splitlines(true) }}|{{ ', '.join(['a', 'b']) }}|{{ 'x'.join('abc') }}|{{ '42'.isdigit() }}|{{ ''.isdigit() }}|{{ 'abc1'.islower() }}|{{ 'ABC!'.isupper() }}|{{ ' '.isspace() }}|{{ 'ab'.isalpha() }}|{{ 'prefix-x'.removeprefix('prefix-') }}",
    "str_format": "{{ '{} and {}'.format('a', 1) }}|{{ '%s=%d'|format('x', 3) }}",
    "str_index": "{{ u[0] }}|{{ u[-1] }}|{{ u[1:4] }}|{{ u[::-1] }}|{{ u[::2] }}|{{ l[::-1] }}|{{ l[-2:] }}|{{ msgs[1:]|length }}",
    "str_escapes": "{{ 'a\\tb' }}|{{ \"it's\" }}|{{ 'it\\'s' }}|{{ '\\u00e9\\x41' }}|{{ '\\\\n' }}|{{ 'a\\/b \\d \\a\\v \\U0001F600 }} {{' }}|{{ 'one\\\ntwo' }}|{{ \"%}\" }}",
    # dicts and lists.
    "dict_methods": "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}|{{ d.keys()|list }}|{{ d.values()|list }}|{{ d.get('zeta') }}|{{ d.get('nope') }}|{{ d.get('nope', 'dflt') }}|{{ 'mid' in d }}|{% for k in d %}{{ k }}{% endfor %}",
    "dict_filters": "{{ d|length }}|{{ d|list }}|{% for k, v in d|dictsort %}{{ k }}={{ v }};{% endfor %}|{% for k, v in d|items %}{{ k }}{% endfor %}|{% for k, v in d|dictsort(by='key', reverse=true) %}{{ k }}{% endfor %}",
    "list_methods": "{{ l.index(1) }}|{{ l.count(3) }}|{{ 2 in l }}|{{ l|sort }}|{{ l|sort(reverse=true) }}|{{ l|max }}|{{ l|min }}|{{ l|sum }}|{{ l|first }}|{{ l|last }}|{{ l|join('-') }}|{{ [n, t, 1.5]|join(',') }}",
    "list_filters": "{{ names|map(attribute='name')|join(',') }}|{{ names|selectattr('n', 'defined')|map(attribute='name')|list }}|{{ names|rejectattr('n', 'defined')|list }}|{{ names|selectattr('name', 'equalto', 'a')|list }}|{{ names|sort(attribute='name')|map(attribute='name')|join }}|{{ names|join(', ', attribute='name') }}|{{ l|map('string')|join('+') }}|{{ [1, 2, 2, 'A', 'a']|unique|list }}|{{ l|select('odd')|list }}|{{ l|reject('odd')|list }}",
    "msg_filters_list": "{{ msgs|map(attribute='role')|unique|list|tojson }}|{{ msgs|map(attribute='role')|list|tojson }}",
    "msg_filters": "{{ msgs|selectattr('role', 'equalto', 'user')|list|length }}|{{ (msgs|selectattr('role', 'eq', 'assistant')|first).content }}|{{ msgs|map(attribute='role')|unique|join(',') }}",
    "number_filters": "{{ 'aXbXc'|replace('X','-',1) }}|{{ 'x'|int }}|{{ ' 42 '|int }}|{{ '1_000'|int }}|{{ 'abc'|float }}|{{ 2.5|round }}|{{ 3.5|round }}|{{ 2.675|round(2) }}|{{ 'ff'|int(0,16) }}|{{ 7.9|int }}|{{ '3.7'|int }}|{{ 2.1|round(0,'ceil') }}|{{ -2.1|round(0,'floor') }}|{{ 3|float }}|{{ '1e3'|float }}|{{ true|int }}|{{ 'x'|int(7) }}",
    "other_filters": "{{ nope|length }}|{{ nope|default('d') }}|{{ ''|default('e', true) }}|{{ '  x  '|trim }}|{{ 'xxhixx'|trim('x') }}|{{ '3'|int + 1 }}|{{ '2.5'|float }}|{{ 2.567|round(2) }}|{{ -3|abs }}|{{ 'ab'|center(6) }}|{{ 'a b  c'|wordcount }}|{{ html|e }}|{{ html|escape }}|{{ 'abc'|reverse }}|{{ 'hello world'|truncate(8) }}|{{ 7|string|length }}",
    "indent_filter": "{{ lines|indent }}|{{ lines|indent(2, true) }}|{{ 'a\\n\\nb'|indent(2, blank=true) }}|{{ 'a\\n\\nb'|indent('> ', first=true) }}",
    "batch_slice": "{{ [1,2,3,4,5]|batch(2)|list }}|{{ [1,2,3,4,5]|slice(2)|list }}|{{ names|groupby('name')|map(attribute='grouper')|list }}",
    # tests.
    "tests": "{{ 'a' is string }}|{{ d is mapping }}|{{ l is mapping }}|{{ 'a' is iterable }}|{{ l is iterable }}|{{ d is iterable }}|{{ 'a' is sequence }}|{{ d is sequence }}|{{ 1 is number }}|{{ t is number }}|{{ 1 is integer }}|{{ f is float }}|{{ t is boolean }}|{{ n is none }}|{{ nope is defined }}|{{ nope is undefined }}|{{ t is true }}|{{ 0 is false }}|{{ 3 is odd }}|{{ 4 is even }}|{{ 9 is divisibleby 3 }}|{{ 'a' is in 'cat' }}|{{ 1 is eq 1 }}|{{ 'x' is equalto 'x' }}|{{ 'abc' is lower }}|{{ 'ABC' is upper }}|{{ n is sameas none }}|{{ strftime_now is defined }}|{{ tools is none }}|{{ tools is defined }}",
    # control flow.
    "loop_vars": "{% for m in msgs %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/{{ loop.length }}/{{ loop.first }}/{{ loop.last }}/{{ loop.previtem.role if loop.previtem is defined else '-' }}/{{ loop.nextitem.role if loop.nextitem is defined else '-' }}/{{ loop.cycle('odd', 'even') }};{% endfor %}",
    "loop_controls": "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}|{% for x in [] %}{{ x }}{% else %}empty{% endfor %}|{% for x in range(6) if x is even %}{{ x }}{{ loop.length }} {% endfor %}|{% for a in [[1,2],[3]] %}{% for b in a %}{{ loop.depth }}{{ b }}{% endfor %}{% endfor %}|{% for x in [1,1,2] %}{{ loop.changed(x) }}{% endfor %}",
    "namespace_scope": "{% set ns = namespace(found=false, n=0) %}{% for m in msgs %}{% if m.role == 'user' %}{% set ns.found = true %}{% set ns.n = ns.n + 1 %}{% endif %}{% set inner = 1 %}{% endfor %}{{ ns.found }} {{ ns.n }} [{{ inner }}]{% set x = 1 %}{% if true %}{% set x = 2 %}{% endif %}{{ x }}",
    "macros": "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Ann') }} {{ greet('Bob', punct='?') }}{% macro wrap() %}<{{ caller() }}>{% endmacro %}{% call wrap() %}inside{% endcall %}",
    "set_block_filter": "{% set body %}\n  Some {{ 'text' }}\n{% endset %}[{{ body }}]{% filter upper %}shout {{ 'it' }}{% endfilter %}{% raw %}{{ not rendered }}{% endraw %}",
    "ternary_and_logic": "{{ 'y' if t else 'n' }}|{{ 'y' if n else 'n' }}|{{ n or 'fallback' }}|{{ t and 'both' }}|{{ not n }}|{{ 1 < 2 < 3 }}|{{ 'b' > 'a' }}|{{ l == [3, 1, 2] }}|{{ d == d }}|{{ [1, 2] == [1, 2] }}",
    # whitespace control with trim_blocks / lstrip_blocks.
    "whitespace": "A\n  {% if true %}\n  B\n  {% endif %}\n  {# comment #}\nC {%- if true %} D {% endif -%} E\n{%+ if true %}F{% endif %}\n  {{ 'G' }}\n{% for i in range(2) -%}\n  {{ i }}\n{%- endfor %}\nend\n",
    "generation_tag": "{% for m in msgs %}{% if m.role == 'assistant' %}{% generation %}\n{{ m.content }}{% endgeneration %}\n{% else %}{{ m.role }}\n{% endif %}{% endfor %}{%- generation -%} x {%- endgeneration -%}",
    "strftime": "{{ strftime_now('%d %B %Y') }}|{{ strftime_now('%b %m %H:%M:%S %A %a') }}|{{ strftime_now('%e|%j|%y|%Y-%m-%d|%I %p|%f|%%|%-d %-m|%U %W %w %u|%D %T|%c|%x %X') }}",
    "raise_exception": "{% if msgs[0].role == 'system' %}{{ raise_exception('System role not supported: ' ~ msgs[0].content) }}{% endif %}ok",
    "undefined_attr_error": "{{ nope.attr }}",
    "content_none_concat": "{% for m in messages %}{% if m.content is none %}none{% elif m.content %}{{ m.content }}{% endif %}{% if m.tool_calls is defined %}{{ m.tool_calls|length }}{% endif %}{{ m.tool_calls|length }};{% endfor %}",
}


# Where minijinja cannot do as jinja2 does (no tuples, no hook on iteration or `~`): each is
# rendered by jinja2 all the same, and tests/templates.rs checks that tinfer still differs, so the
# list stays true. The README in tests/fixtures/templates says why each is left.
KNOWN = {
    "known/tuple_prints_as_list": "{{ (1, 2) }}|{{ d.items()|list }}|{{ (1, 2) == [1, 2] }}",
    "known/iterating_none": "{% for x in n %}{{ x }}{% endfor %}done",
    "known/tojson_of_generator": "{{ msgs|map(attribute='role')|tojson }}",
    "known/concat_float_and_list": "{{ 'x' ~ big ~ l }}",
    "known/callable_test": "{{ raise_exception is callable }}",
}


def audit_cases():
    for name, src in AUDIT.items():
        c = ctx(TOOL_CHAT if name == "content_none_concat" else SYSTEM, tools=TOOLS if name == "tojson_tools" else None, tokens=CHATML, **V)
        yield {"name": f"audit/{name}", "template": src, "context": c}
    for name, src in KNOWN.items():
        yield {"name": name, "template": src, "context": ctx(SYSTEM, tokens=CHATML, **V), "known_difference": True}


def render(case):
    src = case.get("template") or (DIR / case["template_file"]).read_text(encoding="utf-8")
    try:
        out = ENV.from_string(src).render(**case["context"])
        case["expected"] = out
    except jinja2.exceptions.TemplateError as e:
        # raise_exception raises the base class; UndefinedError, SecurityError etc. are subclasses.
        case["error"] = str(e) if type(e) is jinja2.exceptions.TemplateError else None
        case["error_kind"] = type(e).__name__
    except Exception as e:  # TypeError, ValueError...: a failure of the template all the same
        case["error"] = None
        case["error_kind"] = type(e).__name__
    return case


def main():
    cases = [render({"now": NOW.isoformat(), **c}) for c in list(real_cases()) + list(audit_cases())]
    out = {
        "about": "chat templates rendered by jinja2 " + jinja2.__version__ + " in transformers' environment; "
        "regenerate with: python3 scripts/make-template-cases.py",
        "cases": cases,
    }
    path = DIR / "cases.json"
    path.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    errs = sum(1 for c in cases if "expected" not in c)
    print(f"wrote {len(cases)} cases ({errs} errors) to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
