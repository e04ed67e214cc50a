"""Summarizers: the extractive default (budget, order, determinism, Portuguese text, hostile input) and the
OpenAI-backed one against a local server that speaks the Chat Completions API."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from stratus_db.config import Settings
from stratus_db.conversations.summarizer import (
    ChatModelSummarizer,
    ExtractiveSummarizer,
    OpenAISummarizer,
    SummaryInput,
    extractive_summary,
    split_sentences,
    summarizer_for,
    trim_to_budget,
)
from stratus_db.errors import ConfigurationError, SummarizerUnavailableError, ValidationError
from stratus_db.kit.tokens import estimate_tokens
from tests.fixtures.chat_completions import ChatCompletionsStub, Reply

CORPUS = Path(__file__).resolve().parents[1] / "bench" / "data" / "conversas-aviacao.jsonl"
LIST_MARKER = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)])\s+")


def conversation(conversation_id: str = "conv-01") -> list[SummaryInput]:
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    return [
        SummaryInput(
            seq=row["seq"],
            message_type=row["message_type"],
            agent_name=row["agent_name"],
            content=row["content"],
        )
        for row in rows
        if row["conversation_id"] == conversation_id
    ]


def user(seq: int, content: str) -> SummaryInput:
    return SummaryInput(seq=seq, message_type="user_input", agent_name=None, content=content)


def agent(seq: int, content: str, name: str | None = "meteorologia") -> SummaryInput:
    return SummaryInput(seq=seq, message_type="agent_response", agent_name=name, content=content)


def summarize(messages: list[SummaryInput], max_tokens: int, previous_summary: str | None = None) -> str:
    summary = extractive_summary(messages, previous_summary=previous_summary, max_tokens=max_tokens)
    assert estimate_tokens(summary) <= max_tokens
    return summary


def source_sentences(messages: list[SummaryInput]) -> list[str]:
    """The sentences of the messages, in order, as the summarizer sees them (Markdown and list markers gone)."""
    return [
        sentence
        for message in messages
        for line in message.content.replace("**", "").replace("`", "").split("\n")
        for sentence in split_sentences(LIST_MARKER.sub("", line))
    ]


def kept_sentences(summary: str, sources: list[str]) -> list[str]:
    """The whole source sentences a summary is made of, in its order; fails on any piece that is not one."""
    kept = []
    for line in summary.split("\n"):
        body = line.split(": ", 1)[1]
        while body:
            whole = [source for source in sources if body == source or body.startswith(source + " ")]
            assert whole, f"{body[:60]!r} does not start with a whole sentence of the conversation"
            longest = max(whole, key=len)
            kept.append(longest)
            body = body[len(longest) :].lstrip(" ")
    return kept


class TestSentenceSplitting:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("Decolei às 14h. Pousei às 15h30.", ["Decolei às 14h.", "Pousei às 15h30."]),
            ("O Sr. Silva e o Cmte. Souza voam juntos.", ["O Sr. Silva e o Cmte. Souza voam juntos."]),
            (
                "Teto de 1.500 ft e visibilidade de 2,5 km. Ok?",
                ["Teto de 1.500 ft e visibilidade de 2,5 km.", "Ok?"],
            ),
            ("São aprox. 20 min de voo. Depois, pouso.", ["São aprox. 20 min de voo.", "Depois, pouso."]),
            ("Falei com J. Pereira ontem.", ["Falei com J. Pereira ontem."]),
            ("Há CB. Evite a área.", ["Há CB.", "Evite a área."]),
            ("Passos: 1. abrir o plano 2. enviar", ["Passos: 1. abrir o plano 2. enviar"]),
            ("Veja www.redemet.aer.mil.br. Depois ligue.", ["Veja www.redemet.aer.mil.br.", "Depois ligue."]),
            ("entendi. e o CB de tarde? vou ver", ["entendi.", "e o CB de tarde?", "vou ver"]),
            ("hmm... acho que sim!!! né?", ["hmm...", "acho que sim!!!", "né?"]),
            (
                "METAR SBGR 251200Z 18005KT 9999 FEW030 25/15 Q1015= METAR SBKP 251200Z CAVOK 22/10 Q1016= Ok?",
                [
                    "METAR SBGR 251200Z 18005KT 9999 FEW030 25/15 Q1015=",
                    "METAR SBKP 251200Z CAVOK 22/10 Q1016=",
                    "Ok?",
                ],
            ),
            ("Ele disse: “Pista livre.” Decolamos.", ["Ele disse: “Pista livre.”", "Decolamos."]),
            ("   ", []),
        ],
    )
    def test_splits_where_a_portuguese_sentence_ends(self, text: str, expected: list[str]) -> None:
        assert split_sentences(text) == expected


class TestExtractiveBudget:
    @pytest.mark.parametrize("max_tokens", [*range(1, 41), 60, 100, 250, 500, 1000, 3000])
    def test_never_exceeds_the_budget(self, max_tokens: int) -> None:
        for conversation_id in ("conv-01", "conv-08", "conv-12"):
            summarize(conversation(conversation_id), max_tokens)

    def test_keeps_everything_when_everything_fits(self) -> None:
        messages = [user(1, "Qual o METAR de SBGR?"), agent(2, "Vento calmo, CAVOK.")]
        assert (
            summarize(messages, 1000)
            == "Usuário: Qual o METAR de SBGR?\nAgente meteorologia: Vento calmo, CAVOK."
        )

    def test_uses_the_budget_it_is_given(self) -> None:
        messages = conversation("conv-12")
        assert estimate_tokens(summarize(messages, 400)) >= 380

    def test_empty_input_gives_an_empty_summary(self) -> None:
        assert summarize([], 1) == ""
        assert summarize([], 10, previous_summary="") == ""
        assert summarize([user(1, "   \n\t ")], 10, previous_summary="  \n") == ""

    def test_a_single_sentence_larger_than_the_budget_is_cut_on_a_word_boundary(self) -> None:
        sentence = "O planejamento " + " ".join(f"pernada{index} SBGR" for index in range(5_000)) + " acabou."
        summary = summarize([user(1, sentence)], 20)
        assert summary.startswith("Usuário: O planejamento pernada0 SBGR")
        assert summary.endswith("…")
        body = summary.removeprefix("Usuário: ").removesuffix("…")
        assert sentence.startswith(body + " ")  # whole words only

    def test_a_single_word_larger_than_the_budget_is_cut_between_characters(self) -> None:
        summary = summarize([user(1, "x" * 100_000)], 3)
        assert summary == "x" * (len(summary) - 1) + "…"

    def test_the_tiniest_budget_still_says_something(self) -> None:
        summary = summarize([user(1, "Qual o METAR de SBGR agora?")], 1)
        assert summary.endswith("…")
        assert len(summary) > 1
        assert "Qual o METAR de SBGR agora?".startswith(summary.removesuffix("…"))
        assert estimate_tokens(summary) <= 1

    def test_never_cuts_a_sentence_when_a_whole_one_fits(self) -> None:
        messages = conversation("conv-03")
        for max_tokens in (30, 80, 200, 600):
            assert kept_sentences(summarize(messages, max_tokens), source_sentences(messages))

    def test_a_previous_summary_larger_than_the_budget_is_reduced_and_new_messages_still_enter(self) -> None:
        previous = "\n".join(
            f"Usuário: Na etapa {index}, voei de SBGR para SBKP com teto de {index}00 ft."
            for index in range(400)
        )
        new = [user(500, "Agora quero ir para SBRP amanhã às 14h30, é possível?")]
        summary = summarize(new, 150, previous_summary=previous)
        assert "SBRP amanhã às 14h30" in summary
        assert "Na etapa" in summary

    def test_folding_again_keeps_the_important_parts_of_the_previous_summary(self) -> None:
        messages = conversation("conv-01")
        first = summarize(messages[:-6], 250)
        second = summarize(messages[-6:], 250, previous_summary=first)
        assert "Sistema: Contexto: usuário é aluno de curso de piloto comercial" in first
        assert "Sistema: Contexto: usuário é aluno de curso de piloto comercial" in second
        assert second.split("\n")[0] == first.split("\n")[0]


class TestExtractiveContent:
    def test_lines_follow_the_conversation_order_with_speakers(self) -> None:
        messages = [
            SummaryInput(
                seq=3, message_type="agent_response", agent_name=None, content="Use a pista 09 em SBMT."
            ),
            SummaryInput(
                seq=1, message_type="system", agent_name=None, content="Usuário voa um PA-28 em SBMT."
            ),
            user(2, "Qual pista devo usar em SBMT hoje?"),
        ]
        summary = summarize(messages, 1000)
        assert summary.split("\n") == [
            "Sistema: Usuário voa um PA-28 em SBMT.",
            "Usuário: Qual pista devo usar em SBMT hoje?",
            "Agente: Use a pista 09 em SBMT.",
        ]

    @pytest.mark.parametrize("conversation_id", ["conv-03", "conv-06", "conv-07", "conv-10", "conv-11"])
    def test_sentences_keep_their_original_order(self, conversation_id: str) -> None:
        messages = conversation(conversation_id)
        sources = source_sentences(messages)
        kept = kept_sentences(summarize(messages, 300), sources)
        assert len(kept) > 3
        position = -1
        for sentence in kept:
            # Raises ValueError if the sentence only occurs earlier than the one kept before it.
            position = sources.index(sentence, position + 1)

    def test_prefers_sentences_with_aviation_codes_and_numbers(self) -> None:
        messages = [
            agent(1, "Isso é bem comum e acontece com muita gente que está começando agora."),
            agent(2, "Em SBKP o vento está 340/06KT e o QNH 1018."),
        ]
        assert summarize(messages, 25) == "Agente meteorologia: Em SBKP o vento está 340/06KT e o QNH 1018."

    def test_prefers_the_users_question_to_pleasantries(self) -> None:
        messages = [
            user(1, "Bom dia! Tudo bem? Obrigado pela ajuda de ontem."),
            user(2, "Preciso de alternativa para SBRP se o teto baixar?"),
        ]
        assert "Preciso de alternativa para SBRP se o teto baixar?" in summarize(messages, 25)

    def test_portuguese_accents_codes_and_reports_are_kept_verbatim(self) -> None:
        messages = [
            user(1, "METAR SBKP 141200Z 34006KT 9999 FEW030 SCT090 26/17 Q1018="),
            agent(2, "Em Ribeirão Preto a decolagem às 14h30 exige atenção: altitude densidade ≈ 4.200 ft."),
            SummaryInput(
                seq=3, message_type="agent_response", agent_name="regulamentação", content="Ver RBAC 91."
            ),
        ]
        summary = summarize(messages, 1000)
        for fragment in (
            "METAR SBKP 141200Z 34006KT 9999 FEW030 SCT090 26/17 Q1018=",
            "Ribeirão Preto a decolagem às 14h30 exige atenção: altitude densidade ≈ 4.200 ft.",
            "Agente regulamentação: Ver RBAC 91.",
        ):
            assert fragment in summary

    def test_markdown_lists_and_tables_become_plain_sentences(self) -> None:
        content = "**Resumo:**\n- `9999`: visibilidade de 10 km.\n\n| Item | Mínimo |\n|---|---|\n| Teto | 1.500 ft |"
        assert summarize([agent(1, content)], 1000) == (
            "Agente meteorologia: Resumo: 9999: visibilidade de 10 km. Item; Mínimo Teto; 1.500 ft"
        )


class TestExtractiveDeterminism:
    def test_same_input_same_bytes(self) -> None:
        messages = conversation("conv-12")
        results = {
            summarize(messages, budget, previous_summary="Usuário: voo para SBPT.") for budget in [120] * 5
        }
        assert len(results) == 1

    def test_same_bytes_in_processes_with_different_hash_seeds(self) -> None:
        program = (
            "import json, sys\n"
            "from stratus_db.conversations.summarizer import SummaryInput, extractive_summary\n"
            f"rows = [json.loads(line) for line in open({str(CORPUS)!r}, encoding='utf-8')]\n"
            "messages = [SummaryInput(r['seq'], r['message_type'], r['agent_name'], r['content']) for r in rows]\n"
            "sys.stdout.buffer.write(extractive_summary(messages, previous_summary=None, max_tokens=700).encode())\n"
        )
        outputs = {
            subprocess.run(
                [sys.executable, "-c", program],
                check=True,
                capture_output=True,
                env={**os.environ, "PYTHONHASHSEED": seed},
            ).stdout
            for seed in ("1", "2")
        }
        assert len(outputs) == 1
        assert estimate_tokens(outputs.pop().decode()) <= 700

    async def test_the_async_summarizer_matches_the_function_also_when_offloaded_to_a_thread(self) -> None:
        small = conversation("conv-02")
        large = [
            user(index, f"Pernada {index}: de SBGR a SBKP às {index % 24}h, teto {index}00 ft.")
            for index in range(3000)
        ]
        summarizer = ExtractiveSummarizer()
        for messages in (small, large):
            expected = extractive_summary(messages, previous_summary=None, max_tokens=200)
            assert await summarizer.summarize(messages, previous_summary=None, max_tokens=200) == expected


class TestExtractiveHostileInput:
    def test_nul_and_control_characters_never_reach_the_summary(self) -> None:
        summary = summarize([user(1, "Voo\x00 para\x07 SBGR\x1b amanhã.\x00"), agent(2, "Ok\x00.")], 1000)
        assert summary == "Usuário: Voo para SBGR amanhã.\nAgente meteorologia: Ok ."

    def test_emoji_survive(self) -> None:
        assert summarize([user(1, "Pousei em SBRJ 🛬✈️👨‍✈️! Que vista 🌅.")], 1000) == (
            "Usuário: Pousei em SBRJ 🛬✈️👨‍✈️! Que vista 🌅."
        )

    def test_lone_surrogates_become_replacement_characters(self) -> None:
        summary = summarize([user(1, "texto \ud83d quebrado"), agent(2, "resposta", name="a\udc00b")], 1000)
        summary.encode("utf-8")
        assert "\ufffd" in summary

    @pytest.mark.parametrize(
        "content",
        [
            "a. " * 34_000,
            "Sr. " * 25_000,
            "1. " * 34_000,
            "SBGR. " * 17_000,
            "palavra " * 12_500,
            "?" * 100_000,
            "\x00" * 100_000,
            "🛩️" * 50_000,
            "x" * 100_000,
            "METAR " + "SBGR " * 20_000,
        ],
    )
    def test_100_kb_of_hostile_text_gives_a_summary_within_budget(self, content: str) -> None:
        summary = summarize([user(1, content)], 50, previous_summary=content)
        summary.encode("utf-8")
        assert "\x00" not in summary

    @pytest.mark.parametrize("max_tokens", [0, -1, True, 1.5, "10", None])
    def test_a_budget_that_is_not_a_positive_integer_is_refused(self, max_tokens: object) -> None:
        with pytest.raises(ValidationError, match="max_tokens must be a positive integer"):
            extractive_summary([user(1, "oi")], previous_summary=None, max_tokens=max_tokens)  # type: ignore[arg-type]

    def test_an_unknown_message_type_is_refused(self) -> None:
        with pytest.raises(
            ValidationError, match="message_type must be one of user_input, agent_response, system"
        ):
            SummaryInput(seq=1, message_type="tool", agent_name=None, content="x")


class TestTrimToBudget:
    def test_keeps_leading_whole_sentences(self) -> None:
        text = "Usuário pediu o METAR de SBGR. Agente explicou o vento. Depois falaram de combustível."
        kept = "Usuário pediu o METAR de SBGR. Agente explicou o vento."
        assert trim_to_budget(text, estimate_tokens(kept)) == kept

    def test_keeps_lines_and_speaker_prefixes(self) -> None:
        text = (
            "Usuário: Quer ir a SBRP.\nAgente meteorologia: TAF prevê BR. Sugeriu sair às 10h.\nSistema: fim."
        )
        kept = "Usuário: Quer ir a SBRP.\nAgente meteorologia: TAF prevê BR."
        assert trim_to_budget(text, estimate_tokens(kept)) == kept

    def test_cuts_the_first_sentence_only_when_nothing_whole_fits(self) -> None:
        cut = "Usuário: Preciso…"
        text = "Usuário: Preciso planejar uma navegação longa até SBPA."
        assert trim_to_budget(text, estimate_tokens(cut)) == cut

    @pytest.mark.parametrize("max_tokens", range(1, 30))
    def test_never_exceeds_the_budget(self, max_tokens: int) -> None:
        text = conversation("conv-03")[3].content
        assert estimate_tokens(trim_to_budget(text, max_tokens)) <= max_tokens


# -------------------------------------------------------------------------------------------------------------
# OpenAISummarizer against a local Chat Completions server


FAST_RETRY = {"retry-after-ms": "5"}
"""Makes the SDK's back-off 5 ms, so retry tests take no time."""


async def openai_summary(
    stub: ChatCompletionsStub,
    messages: list[SummaryInput],
    max_tokens: int,
    previous_summary: str | None = None,
    **options: float,
) -> str:
    summarizer = OpenAISummarizer(SecretStr("test-key"), base_url=stub.base_url, **options)  # type: ignore[arg-type]
    try:
        return await summarizer.summarize(messages, previous_summary=previous_summary, max_tokens=max_tokens)
    finally:
        await summarizer.close()


class TestOpenAIRequest:
    async def test_sends_model_budget_prompt_and_transcript_and_returns_the_summary(
        self, stub: ChatCompletionsStub
    ) -> None:
        stub.replies = [
            Reply(content="O usuário planeja ir de SBKP a SBRP amanhã; teto previsto de 1.200 ft.")
        ]
        summarizer = OpenAISummarizer("sk-test-123", model="gpt-4o-mini", base_url=stub.base_url)
        try:
            summary = await summarizer.summarize(
                [agent(8, "O TAF prevê BR e BKN012 às 11Z."), user(7, "Vou de SBKP a SBRP amanhã.")],
                previous_summary="Sistema: aluno de piloto comercial.",
                max_tokens=120,
            )
        finally:
            await summarizer.close()
        assert summary == "O usuário planeja ir de SBKP a SBRP amanhã; teto previsto de 1.200 ft."
        [request] = stub.requests
        assert request.path == "/v1/chat/completions"
        assert request.headers["authorization"] == "Bearer sk-test-123"
        assert request.body["model"] == "gpt-4o-mini"
        assert request.body["max_completion_tokens"] == 120
        assert request.body["temperature"] == 0
        system, conversation_text = request.body["messages"]
        assert system["role"] == "system"
        assert "aviação civil brasileira" in system["content"]
        assert "no máximo 120 tokens" in system["content"]
        assert conversation_text["role"] == "user"
        assert conversation_text["content"] == (
            "<conversa>\nResumo anterior:\nSistema: aluno de piloto comercial.\n\nMensagens novas:\n"
            "Usuário: Vou de SBKP a SBRP amanhã.\nAgente meteorologia: O TAF prevê BR e BKN012 às 11Z.\n</conversa>"
        )

    async def test_nothing_to_summarize_sends_nothing(self, stub: ChatCompletionsStub) -> None:
        assert await openai_summary(stub, [], 50, previous_summary="  ") == ""
        assert stub.requests == []

    async def test_temperature_can_be_left_out_for_reasoning_models(self, stub: ChatCompletionsStub) -> None:
        summarizer = OpenAISummarizer("k", model="o4-mini", base_url=stub.base_url, temperature=None)
        try:
            await summarizer.summarize([user(1, "oi")], previous_summary=None, max_tokens=10)
        finally:
            await summarizer.close()
        assert "temperature" not in stub.requests[0].body

    async def test_an_answer_longer_than_the_budget_is_trimmed_to_whole_sentences(
        self, stub: ChatCompletionsStub
    ) -> None:
        stub.replies = [Reply(content="Primeira frase sobre SBGR. " + "Frase extra com detalhes. " * 50)]
        summary = await openai_summary(stub, [user(1, "Resumo, por favor.")], 20)
        assert summary == "Primeira frase sobre SBGR. Frase extra com detalhes."
        assert estimate_tokens(summary) <= 20

    async def test_an_answer_cut_off_by_the_token_limit_loses_its_unfinished_sentence(
        self, stub: ChatCompletionsStub
    ) -> None:
        stub.replies = [
            Reply(content="O voo está confirmado. O piloto vai verificar o", finish_reason="length")
        ]
        assert await openai_summary(stub, [user(1, "Confirma o voo?")], 100) == "O voo está confirmado."

    async def test_a_huge_history_is_reduced_before_it_is_sent(self, stub: ChatCompletionsStub) -> None:
        messages = [
            user(index, f"Pernada {index} de SBGR a SBKP, teto {index}00 ft.") for index in range(2000)
        ]
        await openai_summary(stub, messages, 100, max_input_tokens=500)
        sent = stub.requests[0].body["messages"][1]["content"]
        assert 450 <= estimate_tokens(sent) <= 500
        assert "Pernada" in sent

    async def test_an_empty_answer_is_a_typed_error(self, stub: ChatCompletionsStub) -> None:
        stub.replies = [Reply(content="")]
        with pytest.raises(SummarizerUnavailableError, match="returned no summary text") as raised:
            await openai_summary(stub, [user(1, "oi")], 10)
        assert raised.value.retryable is False


class TestOpenAIFailures:
    @pytest.mark.parametrize("status", [500, 502, 503, 429])
    async def test_a_failing_server_is_retried_then_a_retryable_error(
        self, stub: ChatCompletionsStub, status: int
    ) -> None:
        stub.replies = [Reply(status=status, headers=FAST_RETRY)]
        with pytest.raises(SummarizerUnavailableError, match=f"answered HTTP {status}.*3 attempts") as raised:
            await openai_summary(stub, [user(1, "oi")], 10, max_retries=2)
        assert raised.value.retryable is True
        assert raised.value.status_code == 503
        assert len(stub.requests) == 3

    async def test_a_transient_failure_is_retried_until_it_succeeds(self, stub: ChatCompletionsStub) -> None:
        stub.replies = [
            Reply(status=500, headers=FAST_RETRY),
            Reply(status=429, headers=FAST_RETRY),
            Reply(content="Resumo depois de duas falhas."),
        ]
        summary = await openai_summary(stub, [user(1, "oi")], 50, max_retries=2)
        assert summary == "Resumo depois de duas falhas."
        assert len(stub.requests) == 3
        assert len({request.headers["x-stainless-retry-count"] for request in stub.requests}) == 3

    async def test_an_exhausted_quota_is_not_worth_retrying_later(self, stub: ChatCompletionsStub) -> None:
        stub.replies = [Reply(status=429, error_code="insufficient_quota", headers=FAST_RETRY)]
        with pytest.raises(SummarizerUnavailableError, match="insufficient_quota") as raised:
            await openai_summary(stub, [user(1, "oi")], 10, max_retries=0)
        assert raised.value.retryable is False

    async def test_a_refused_request_is_not_retried(self, stub: ChatCompletionsStub) -> None:
        stub.replies = [Reply(status=400)]
        with pytest.raises(SummarizerUnavailableError, match="answered HTTP 400") as raised:
            await openai_summary(stub, [user(1, "oi")], 10, max_retries=2)
        assert raised.value.retryable is False
        assert len(stub.requests) == 1

    @pytest.mark.parametrize(("status", "problem"), [(401, "refused the API key"), (404, "unknown model")])
    async def test_bad_credentials_or_model_are_configuration_errors(
        self, stub: ChatCompletionsStub, status: int, problem: str
    ) -> None:
        stub.replies = [Reply(status=status)]
        with pytest.raises(ConfigurationError, match=problem) as raised:
            await openai_summary(stub, [user(1, "oi")], 10)
        assert "test-key" not in raised.value.message
        assert len(stub.requests) == 1

    async def test_a_server_too_slow_times_out_into_a_retryable_error(
        self, stub: ChatCompletionsStub
    ) -> None:
        stub.replies = [Reply(stall=True)]
        with pytest.raises(
            SummarizerUnavailableError, match=r"did not answer within 0.2 s \(2 attempts\)"
        ) as raised:
            await openai_summary(stub, [user(1, "oi")], 10, timeout=0.2, max_retries=1)
        assert raised.value.retryable is True
        assert len(stub.requests) == 2

    async def test_an_unreachable_server_is_a_retryable_error(self) -> None:
        with socket.socket() as placeholder:
            placeholder.bind(("127.0.0.1", 0))
            port = placeholder.getsockname()[1]
        summarizer = OpenAISummarizer("k", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
        try:
            with pytest.raises(SummarizerUnavailableError, match="cannot be reached") as raised:
                await summarizer.summarize([user(1, "oi")], previous_summary=None, max_tokens=10)
        finally:
            await summarizer.close()
        assert raised.value.retryable is True

    @pytest.mark.parametrize(
        "options",
        [{"api_key": " "}, {"model": ""}, {"timeout": 0}, {"max_retries": -1}, {"max_input_tokens": 0}],
    )
    def test_a_bad_configuration_is_refused_up_front(self, options: dict[str, object]) -> None:
        arguments: dict[str, object] = {"api_key": "k", **options}
        with pytest.raises(ConfigurationError):
            OpenAISummarizer(**arguments)  # type: ignore[arg-type]


class TestFromSettings:
    def test_the_extractive_summarizer_whatever_keys_are_set(self) -> None:
        assert isinstance(summarizer_for(Settings()), ExtractiveSummarizer)
        keyed = Settings(OPENAI_API_KEY="sk-dos-agentes")  # type: ignore[arg-type]
        assert isinstance(summarizer_for(keyed), ExtractiveSummarizer)

    def test_openai_only_when_chosen_and_only_with_a_key(self) -> None:
        with pytest.raises(ConfigurationError, match="needs OPENAI_API_KEY"):
            summarizer_for(Settings(STRATUS_SUMMARIZER="openai"))
        with pytest.raises(ConfigurationError, match="needs OPENAI_API_KEY"):
            summarizer_for(Settings(STRATUS_SUMMARIZER="openai", OPENAI_API_KEY="  "))  # type: ignore[arg-type]

    async def test_when_chosen_the_openai_summarizer_at_the_configured_url(
        self, stub: ChatCompletionsStub
    ) -> None:
        summarizer = summarizer_for(
            Settings(
                STRATUS_SUMMARIZER="openai",
                OPENAI_API_KEY="sk-env",  # type: ignore[arg-type]
                OPENAI_BASE_URL=stub.base_url,
                STRATUS_SUMMARY_MODEL="gpt-4.1-mini",
            )
        )
        assert isinstance(summarizer, OpenAISummarizer)
        try:
            await summarizer.summarize([user(1, "Vou a SBGR.")], previous_summary=None, max_tokens=30)
        finally:
            await summarizer.close()
        assert stub.requests[0].headers["authorization"] == "Bearer sk-env"
        assert stub.requests[0].body["model"] == "gpt-4.1-mini"


# -------------------------------------------------------------------------------------------------------------
# ChatModelSummarizer over a chat model's ainvoke (LangChain's interface, duck-typed)


class _Reply:
    def __init__(self, content: object, finish_reason: str = "stop") -> None:
        self.content = content
        self.response_metadata = {"finish_reason": finish_reason}


class _ChatModel:
    """A chat model as LangChain's `BaseChatModel.ainvoke` is called: a list of (role, text), a message back."""

    def __init__(self, *replies: object) -> None:
        self.replies = list(replies)
        self.calls: list[list[tuple[str, str]]] = []

    async def ainvoke(self, messages: list[tuple[str, str]]) -> object:
        self.calls.append(messages)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


class TestChatModelSummarizer:
    async def test_asks_the_model_with_the_portuguese_prompt_and_trims_its_answer(self) -> None:
        model = _ChatModel(_Reply("Piloto planeja VFR para SBRP. " * 40))
        summary = await ChatModelSummarizer(model).summarize(
            [user(1, "Vou a SBRP amanhã, VFR.")], previous_summary="Resumo: aluno de PC.", max_tokens=30
        )
        ((system, prompt), (human, transcript)) = model.calls[0]
        assert (system, human) == ("system", "human")
        assert "30" in prompt, "the budget is in the prompt"
        assert "Vou a SBRP amanhã" in transcript
        assert "aluno de PC" in transcript
        assert summary.startswith("Piloto planeja VFR para SBRP.")
        assert estimate_tokens(summary) <= 30

    async def test_reads_langchains_content_blocks_and_drops_a_cut_off_sentence(self) -> None:
        blocks = [{"type": "text", "text": "Piloto vai a SBRP. "}, {"type": "text", "text": "O TAF prev"}]
        model = _ChatModel(_Reply(blocks, finish_reason="length"))
        summary = await ChatModelSummarizer(model).summarize(
            [user(1, "TAF?")], previous_summary=None, max_tokens=50
        )
        assert summary == "Piloto vai a SBRP."

    async def test_nothing_to_summarize_asks_nothing(self) -> None:
        model = _ChatModel()
        assert await ChatModelSummarizer(model).summarize([], previous_summary=None, max_tokens=50) == ""
        assert model.calls == []

    @pytest.mark.parametrize(
        ("reply", "retryable"), [(TimeoutError("lento"), True), (_Reply(""), False), (_Reply(None), False)]
    )
    async def test_a_failing_or_empty_model_is_a_summarizer_error(
        self, reply: object, retryable: bool
    ) -> None:
        with pytest.raises(SummarizerUnavailableError) as raised:
            await ChatModelSummarizer(_ChatModel(reply)).summarize(
                [user(1, "Oi")], previous_summary=None, max_tokens=50
            )
        assert raised.value.retryable is retryable

    @pytest.mark.parametrize("model", [object(), "gpt-4o-mini", None])
    def test_an_object_without_ainvoke_is_refused(self, model: object) -> None:
        with pytest.raises(ConfigurationError, match="ainvoke"):
            ChatModelSummarizer(model)
