"""Offline token estimates: CJK ~1 per character, other text ~4 characters per token."""

from __future__ import annotations

from squall.tokens import (
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD,
    REPLY_PRIMING,
    estimate_text_tokens,
    estimate_tokens,
)


def test_empty_text_is_zero_tokens() -> None:
    assert estimate_text_tokens("") == 0


def test_ascii_is_about_four_characters_per_token() -> None:
    assert estimate_text_tokens("abcd" * 10) == 10
    assert estimate_text_tokens("abcde") == 2  # rounds up


def test_cjk_is_one_token_per_character() -> None:
    assert estimate_text_tokens("你好世界") == 4
    assert estimate_text_tokens("こんにちは") == 5
    assert estimate_text_tokens("안녕하세요") == 5


def test_mixed_chinese_and_ascii_adds_both_parts() -> None:
    # 6 CJK characters ~6 tokens, 10 ASCII characters ~2.5 tokens.
    text = "计算 12 + 5 的结果"
    cjk = 5
    ascii_chars = len(text) - cjk
    assert estimate_text_tokens(text) == cjk + (ascii_chars + 3) // 4


def test_two_byte_scripts_fall_between_ascii_and_cjk() -> None:
    russian = "Привет, как дела"  # 16 characters
    tokens = estimate_text_tokens(russian)
    assert len(russian) / 4 < tokens < len(russian)


def test_long_text_scales_linearly() -> None:
    assert estimate_text_tokens("数" * 100_000) == 100_000
    assert estimate_text_tokens("word " * 100_000) == 125_000


def test_messages_add_overhead_per_message_and_priming() -> None:
    messages = [
        {"role": "system", "content": "abcd"},
        {"role": "user", "content": "你好"},
    ]
    assert estimate_tokens(messages) == REPLY_PRIMING + 2 * MESSAGE_OVERHEAD + 1 + 2
    assert estimate_tokens([]) == REPLY_PRIMING


def test_content_parts_count_text_and_images() -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "abcdabcd"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,xx"}},
            ],
        }
    ]
    assert estimate_tokens(messages) == REPLY_PRIMING + MESSAGE_OVERHEAD + 2 + IMAGE_TOKENS


def test_tool_calls_and_names_count() -> None:
    plain = estimate_tokens([{"role": "assistant", "content": None}])
    with_calls = estimate_tokens(
        [
            {
                "role": "assistant",
                "content": None,
                "name": "bot",
                "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": "{}"}}],
            }
        ]
    )
    assert with_calls > plain
