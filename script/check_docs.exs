# Checks the docs: `elixir script/check_docs.exs` (from any directory).
#
#   1. Every relative link and #anchor in README.md, guides/*.md,
#      CONTRIBUTING.md, CHANGELOG.md, bench/README.md and lib/**/*.ex
#      resolves: the file exists, the anchor is a heading's slug (GitHub's
#      rules), and that heading gives the same anchor under ExDoc, so the link
#      works in both. Links in lib/ are relative to the repository root.
#   2. Every `Caravan...` module named in those Markdown files exists.
#   3. No tracked file cites a work item by number (the word "stop" or
#      "issue" and a number), which no reader can look up.
#
# Prints each problem as file:line and exits 1 if there is any.

defmodule CheckDocs do
  @markdown ["README.md", "CONTRIBUTING.md", "CHANGELOG.md", "bench/README.md"]

  def main do
    markdown = Enum.filter(@markdown, &File.exists?/1) ++ Path.wildcard("guides/*.md")
    sources = Path.wildcard("lib/**/*.ex")

    problems =
      Enum.flat_map(markdown, &links(&1, Path.dirname(&1))) ++
        Enum.flat_map(sources, &links(&1, ".")) ++
        Enum.flat_map(markdown, &modules/1) ++
        work_item_numbers()

    case problems do
      [] ->
        IO.puts("docs: #{length(markdown) + length(sources)} files, every link resolves")

      _ ->
        Enum.each(problems, &IO.puts(:stderr, &1))
        IO.puts(:stderr, "docs: #{length(problems)} problem(s)")
        System.halt(1)
    end
  end

  # -- Links -------------------------------------------------------------------

  defp links(file, base) do
    for {line, _raw, n} <- prose_lines(file),
        [_, target] <- Regex.scan(~r/\]\(([^)\s]+)\)/, line),
        local?(target),
        problem = check_link(file, base, target),
        do: "#{file}:#{n}: link #{target}: #{problem}"
  end

  defp local?(target), do: not Regex.match?(~r/^([a-z][a-z0-9+.-]*:|`)/i, target)

  defp check_link(file, base, target) do
    {path, anchor} =
      case String.split(target, "#", parts: 2) do
        [path, anchor] -> {path, anchor}
        [path] -> {path, nil}
      end

    dest =
      if path == "",
        do: file,
        else: Path.join(base, path) |> Path.expand() |> Path.relative_to_cwd()

    cond do
      not File.exists?(dest) -> "no such file #{dest}"
      anchor == nil or File.dir?(dest) -> nil
      true -> check_anchor(dest, anchor)
    end
  end

  defp check_anchor(dest, anchor) do
    headings = headings(dest)
    # ExDoc prefixes a moduledoc's heading anchors with "module-".
    anchor =
      if String.ends_with?(dest, ".ex"),
        do: String.replace_prefix(anchor, "module-", ""),
        else: anchor

    case Enum.find(headings, fn {slug, _, _} -> slug == anchor end) do
      nil ->
        "no heading with anchor ##{anchor} in #{dest}"

      {_, exdoc, text} when exdoc != anchor ->
        "heading \"#{text}\" is ##{anchor} on GitHub but ##{exdoc} under ExDoc; " <>
          "reword it (no punctuation inside words)"

      _ ->
        nil
    end
  end

  # [{github_slug, exdoc_slug, text}] of a file's Markdown headings.
  defp headings(file) do
    {list, _} =
      file
      |> prose_lines()
      |> Enum.flat_map(fn {_blanked, line, _} ->
        case Regex.run(~r/^\s*\#{1,6}\s+(.+?)\s*#*\s*$/, line) do
          [_, text] -> [text]
          nil -> []
        end
      end)
      |> Enum.map_reduce(%{}, fn text, seen ->
        plain = plain(text)
        slug = github_slug(plain)
        count = Map.get(seen, slug, 0)
        unique = if count == 0, do: slug, else: "#{slug}-#{count}"
        {{unique, exdoc_slug(plain), text}, Map.put(seen, slug, count + 1)}
      end)

    list
  end

  # A heading's text as rendered: links reduced to their text, no emphasis marks.
  defp plain(text) do
    text
    |> String.replace(~r/\[([^\]]*)\]\([^)]*\)/, "\\1")
    |> String.replace(~r/[`*]/, "")
  end

  defp github_slug(text) do
    text
    |> String.downcase()
    |> String.replace(~r/[^\p{L}\p{N}\s_-]/u, "")
    |> String.replace(~r/\s/u, "-")
  end

  defp exdoc_slug(text) do
    text
    |> String.replace(~r/\W+/u, "-")
    |> String.trim("-")
    |> String.downcase()
  end

  # -- Module names ------------------------------------------------------------

  defp modules(file) do
    known = known_modules()

    for {line, n} <- lines(file),
        [_, name] <-
          Regex.scan(~r/`(Caravan(?:\.[A-Z][A-Za-z0-9_]*)*)(?:\.[a-z_]+[?!]?\/\d+)?`/, line),
        not MapSet.member?(known, name),
        do: "#{file}:#{n}: module #{name} does not exist"
  end

  defp known_modules do
    case Process.get(:known_modules) do
      nil ->
        known =
          for file <- Path.wildcard("{lib,test,bench}/**/*.{ex,exs}"),
              [_, name] <- Regex.scan(~r/defmodule\s+([A-Z][\w.]*)/, File.read!(file)),
              into: MapSet.new(),
              do: name

        Process.put(:known_modules, known)
        known

      known ->
        known
    end
  end

  # -- Work-item numbers -------------------------------------------------------

  defp work_item_numbers do
    pattern = "\\b(stop|issue)s? #?[0-9]+"

    case System.cmd("git", ["grep", "-n", "-I", "-i", "-E", pattern], stderr_to_stdout: true) do
      {out, 0} ->
        for hit <- String.split(out, "\n", trim: true),
            do:
              "#{hit |> String.split(":", parts: 3) |> Enum.take(2) |> Enum.join(":")}: " <>
                "cites a work item by number; say what it is instead"

      {_, 1} ->
        []

      {out, _} ->
        ["git grep failed: #{out}"]
    end
  end

  # -- Reading -----------------------------------------------------------------

  defp lines(file) do
    file |> File.read!() |> String.split("\n") |> Enum.with_index(1)
  end

  # The lines outside fenced code blocks, inline code spans blanked out
  # (a link inside code is an example, not a link). In .ex files only the
  # @moduledoc/@doc/@typedoc heredocs count.
  defp prose_lines(file) do
    ex? = String.ends_with?(file, ".ex")

    {kept, _} =
      file
      |> lines()
      |> Enum.map_reduce({not ex?, false}, fn {line, n}, {in_doc, in_fence} ->
        trimmed = String.trim_leading(line)

        cond do
          ex? and not in_doc and Regex.match?(~r/^@(module|type)?doc\s+(~[sS])?"""/, trimmed) ->
            {nil, {true, false}}

          ex? and in_doc and trimmed == ~s(""") ->
            {nil, {false, false}}

          not in_doc ->
            {nil, {in_doc, in_fence}}

          String.starts_with?(trimmed, "```") ->
            {nil, {in_doc, not in_fence}}

          in_fence or (ex? and String.starts_with?(line, String.duplicate(" ", 6))) ->
            {nil, {in_doc, in_fence}}

          true ->
            {{String.replace(line, ~r/`[^`]*`/, "``"), line, n}, {in_doc, in_fence}}
        end
      end)

    Enum.reject(kept, &is_nil/1)
  end
end

File.cd!(Path.expand("..", __DIR__))
CheckDocs.main()
