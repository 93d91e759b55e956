// The request form shows one task at a time: its own targets (data-task on a field), the candidates its
// plan offers, the technique parameters of the techniques that support it (data-tasks), and what "demo"
// means for it. Without this script every field shows and the server ignores the other task's.
(function () {
  "use strict";

  const dataNode = document.getElementById("task-data");
  const form = document.querySelector("form.request-form");
  if (!dataNode || !form) return;
  const data = JSON.parse(dataNode.textContent);
  const taskInputs = Array.from(form.querySelectorAll('input[name="task"]'));
  const candidateInputs = Array.from(form.querySelectorAll('input[name="candidates"]'));

  function chosenTask() {
    const checked = taskInputs.find(function (input) { return input.checked; });
    return checked ? checked.value : "sequence-classification";
  }

  function setOptionText(selectName, text) {
    const option = form.querySelector('select[name="' + selectName + '"] option[value="demo"]');
    if (option && text) option.textContent = text;
  }

  function show(task, resetCandidates) {
    form.querySelectorAll("[data-task]").forEach(function (node) {
      node.hidden = node.dataset.task !== task;
    });
    form.querySelectorAll("[data-tasks]").forEach(function (node) {
      node.hidden = node.dataset.tasks.split(" ").indexOf(task) === -1;
    });
    const offered = data.offered[task] || [];
    const initial = data.initial[task] || [];
    candidateInputs.forEach(function (input) {
      const isOffered = offered.indexOf(input.value) !== -1;
      // The whole entry goes: the checkbox and its own parameters (shown by CSS only while it is chosen).
      const row = input.closest(".candidate-choice") || input.parentNode;
      row.hidden = !isOffered;
      // A new task starts from its own suggested candidates; a candidate it does not offer is never sent.
      if (resetCandidates) input.checked = initial.indexOf(input.value) !== -1;
      else if (!isOffered) input.checked = false;
    });
    setOptionText("model_ref", data.demo_model[task]);
    setOptionText("dataset_ref", data.demo_data[task]);
  }

  taskInputs.forEach(function (input) {
    input.addEventListener("change", function () { show(chosenTask(), true); });
  });
  show(chosenTask(), false);
  form.dataset.taskReady = "true";
})();
